"""Dunning's intake of stored Stripe events: which trigger each event type becomes
(`triggers`), processing one stored event into the mirror and the engine under the account
lock, the event pump (`processing`), and the Celery tasks that run them (`tasks`).
billing_events stores the events and publishes these tasks by name."""
