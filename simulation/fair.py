"""The measures whose definitions decide who looks better, defined once and counted by the
same code for every world (the legacy model, its ablation variants, the real service).

Each world hands over plain facts (who it put in bad debt and when, who has a next step
planned, whose subscription it cancelled, who lacked core access on each day); everything
else is read from the world's ledger, Stripe's side, which every world keeps alike.
"""

from collections.abc import Iterable

from simulation.hardcases import owed_at, written_off_upgrade_alone
from simulation.ledger import Ledger

DEFINITIONS = {
    "recovery_rate": (
        "money recovered / money whose first charge failed, both counted on the invoices "
        "whose first charge failed (any channel: retry, customer on-session, out of band)"
    ),
    "recovered_within_14_days": (
        "money paid within 14 days of its invoice's first failed charge / money failed"
    ),
    "bad_debt": (
        "an account enters bad debt when the world's policy puts it there (the service: a "
        "bad-debt episode opens; legacy: the ban flag is set); each entry counts once"
    ),
    "upgrade_only_bad_debt": (
        "bad-debt entries where, at that moment, every failed invoice the account still owed "
        "(Stripe's ledger) was an upgrade/proration invoice: the base plan was paid"
    ),
    "limbo": (
        "accounts that at the end of the run owe money on an invoice whose first charge "
        "failed (open, or written off and unpaid), whose subscription is not cancelled, and "
        "for which dunning has nothing further planned (no retry, review, cancellation or "
        "revert); unpaid upgrades held back count like anything else"
    ),
    "retries_on_hard": (
        "off-session retries made while the card was in a hard-decline spell (Stripe's "
        "ledger: each such retry is declined again)"
    ),
    "core_access_days_lost": (
        "account-days without core access, sampled at the end of each day, all accounts"
    ),
}


def bad_debt(entries: Iterable[tuple[int, float]], ledger: Ledger, days: int) -> dict:
    """Bad-debt entries (account, seconds since the start) and those an upgrade alone
    caused, judged from the ledger as it stood at each entry."""
    total = upgrade_only = after_write_off = 0
    upgrade_accounts: set[int] = set()
    for account, t in entries:
        total += 1
        owed = owed_at(ledger, account, t)
        if owed and all(state.upgrade for state in owed):
            upgrade_only += 1
            upgrade_accounts.add(account)
            after_write_off += written_off_upgrade_alone(owed, t)
    per_day = upgrade_only / days if days else 0.0
    return {
        "bad_debt_entries": total,
        "upgrade_only_bad_debt": upgrade_only,
        "upgrade_only_bad_debt_accounts": len(upgrade_accounts),
        "upgrade_only_bad_debt_per_day": round(per_day, 4),
        "upgrade_only_bad_debt_per_year": round(per_day * 365, 1),
        "upgrade_only_bad_debt_after_an_upgrade_write_off": after_write_off,
    }


def limbo(ledger: Ledger, *, cancelled: Iterable[int], planned: Iterable[int]) -> dict:
    """Accounts in limbo at the end (see DEFINITIONS), and those owing upgrades alone."""
    cancelled, planned = set(cancelled), set(planned)
    stuck, upgrade_only = 0, 0
    for account in sorted(ledger.by_account):
        owed = ledger.owed(account)
        if not owed or account in cancelled or account in planned:
            continue
        stuck += 1
        upgrade_only += all(state.upgrade for state in owed)
    return {"limbo": stuck, "limbo_upgrade_only": upgrade_only}
