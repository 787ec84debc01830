"""Side effects the engine asks for: one module per kind, found through one registry
(`dunning.effects.registry`).

Every kind has the same small interface, and the outbox (`dunning.outbox`) is the only
code that runs it or writes an item's status:

    still_wanted(item) -> bool         checked right before the network call, on the
                                       item as its worker began it (`dunning.outbox_begin`:
                                       lease renewed; a retry's charge mark set)
    perform(item) -> EffectResult      the network call, with no lock held
    record(item, now) -> None          what success means for the stores, in the
                                       transaction that closes the item
    KEEP_TRYING: bool                  retry at the capped interval until the peer answers
    HANDS_BACK: bool                   a closed item sends its account back to the engine
    HAND_BACK_TRIGGER: TriggerKind     ... as this trigger (None when it never hands back)
    fold_pending(row, payload, running, snapshot) -> int
                                       a pending item's part of the engine's snapshot
                                       (`dunning.snapshot_rows`): fills the snapshot's
                                       fields it owns, returns how many side effects in
                                       flight it counts for (what holds the case back)
    fold_ended(row, payload, snapshot) -> None
                                       an ended item's part of the snapshot
"""
