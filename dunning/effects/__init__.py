"""Side effects the engine asks for: one module per kind, found through one registry
(`dunning.effects.registry`).

Every kind has the same small interface, and the outbox (`dunning.outbox`) is the only
code that runs it or writes an item's status:

    still_wanted(item) -> bool         checked right before the network call
    perform(item) -> EffectResult      the network call, with no lock held
    record(item, now) -> None          what success means for the stores, in the
                                       transaction that closes the item
    KEEP_TRYING: bool                  retry at the capped interval until the peer answers
    HANDS_BACK: bool                   a closed item sends its account back to the engine
"""
