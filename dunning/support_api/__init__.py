"""The NinjaPanel support API: read an account's dunning, recompute, pause, extend grace.

`selectors` read (a constant number of queries per request), `dunning.support` writes,
`views` only parse input, call one of them and render with `serializers`.
"""
