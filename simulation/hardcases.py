"""The hard cases, counted the same way in both worlds: from the book (what was drawn) and
from a world's ledger (what happened). Plain Python over the generator's and the ledger's
data, so the legacy model and the service's report share it."""

from collections import Counter, defaultdict

from simulation.book import LATE, MISSING, Book
from simulation.ledger import Attempt, InvoiceState, Ledger

CARD_STOPPERS = ("hard", "fraud")  # after such a decline, the same card is not to be charged


def drawn(book: Book) -> dict:
    """The hard cases the book holds. A charge counts when it draws a failure of its own
    (one made while its card is already failing fails too, so the run meets a few more)."""
    late: Counter = Counter()
    missing: Counter = Counter()
    write_offs = old = 0
    for truth in book.accounts:
        for charge in truth.charges:
            if charge.trouble is None:
                continue
            old += charge.old
            write_offs += charge.uncollectible_upgrade
            if charge.charge_event == LATE:
                late[charge.trouble.kind] += 1
            elif charge.charge_event == MISSING:
                missing[charge.trouble.kind] += 1
    return {
        "upgrade_invoices_stripe_marks_uncollectible": write_offs,
        "late_charge_events": sum(late.values()),
        "late_charge_events_by_class": dict(sorted(late.items())),
        "missing_charge_events": sum(missing.values()),
        "missing_charge_events_by_class": dict(sorted(missing.items())),
        "invoices_first_seen_old": old,
    }


def owed_at(ledger: Ledger, account: int, t: float) -> list[InvoiceState]:
    """The account's invoices that had failed and were still owed at t (seconds)."""
    owed = []
    for invoice_id in ledger.by_account.get(account, ()):
        state = ledger.invoices[invoice_id]
        if state.failed_at is None or state.failed_at > t:
            continue
        if state.paid_at is not None and state.paid_at <= t:
            continue
        if state.status == "void" and state.closed_at is not None and state.closed_at <= t:
            continue
        owed.append(state)
    return owed


def written_off_upgrade_alone(owed: list[InvoiceState], t: float) -> bool:
    """Every invoice owed is an upgrade, and one of them was already marked uncollectible:
    bad debt entered on these grounds comes from the upgrade's write-off."""
    return (
        bool(owed)
        and all(state.upgrade for state in owed)
        and any(
            state.status == "uncollectible" and state.closed_at is not None and state.closed_at <= t
            for state in owed
        )
    )


def upgrade_write_offs_met(ledger: Ledger) -> int:
    """Upgrade invoices marked uncollectible while the base plan was paid (nothing but
    upgrades owed on the account then)."""
    met = 0
    for state in ledger.invoices.values():
        if state.upgrade and state.status == "uncollectible" and state.closed_at is not None:
            owed = owed_at(ledger, state.account, state.closed_at)
            met += all(other.upgrade for other in owed)
    return met


def retries_after_a_card_decline(attempts: list[Attempt]) -> dict:
    """Retries made on a card that had already been declined as hard (do_not_try_again
    included) or fraud, by the class of that first decline. A new card (a new generation)
    starts clean."""
    first: dict[tuple[int, int], str] = {}
    counts: Counter = Counter()
    for attempt in sorted(attempts, key=lambda a: a.t):
        card = (attempt.account, attempt.card)
        if attempt.retry and card in first:
            counts[first[card]] += 1
        if attempt.declined_by in CARD_STOPPERS and card not in first:
            first[card] = attempt.declined_by
    return {
        "retries_after_a_hard_or_fraud_decline_on_the_card": sum(counts.values()),
        "retries_after_a_card_decline_by_class": {k: counts.get(k, 0) for k in CARD_STOPPERS},
    }


def ledger_measures(ledger: Ledger) -> dict:
    """The hard-case measures that both worlds have, from a world's ledger."""
    old = defaultdict(int)
    for state in ledger.invoices.values():
        if state.charge.old:
            old[state.status] += 1
    return {
        **retries_after_a_card_decline(ledger.attempts),
        "upgrade_write_offs_met": upgrade_write_offs_met(ledger),
        "old_invoices_by_status_at_end": dict(sorted(old.items())),
    }
