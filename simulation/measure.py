"""The service's side of the report, from the run's facts (`facts`: read from its stores
after convergence, merged across shards), checked against Stripe's side (the ledger).
Pure Python: the same facts give the same figures, whichever process made them."""

from collections import Counter

from simulation import fair
from simulation.book import Book
from simulation.facts import ledger_from
from simulation.hardcases import ledger_measures, owed_at
from simulation.ledger import Ledger, money_and_retries

UNFINISHED_EVENTS = ("received", "failed", "dead")
NOT_ABOVE_NOTICE = ("none", "notice")


FASTEST_SUSPENSION_SECONDS = 15 * 86400


def bad_debt(book: Book, ledger: Ledger, episodes: list[list]) -> dict:
    """Every bad-debt episode (account, seconds since the start, reason), counted by
    `fair.bad_debt` as the legacy flag is; and the episodes the base ladder entered sooner
    than the base plan's own failure allows."""
    reasons: Counter = Counter()
    entries, dated_by_upgrade = [], 0
    for account, entered, reason in episodes:
        reasons[reason] += 1
        entries.append((account, entered))
        owed = owed_at(ledger, account, entered)
        if (
            owed
            and not all(state.upgrade for state in owed)
            and reason == "ladder_suspended"
            and min(owed, key=lambda s: s.charge.at).upgrade
        ):
            # Suspended by the ladder sooner than the base plan's own failure allows even on
            # the fastest ladder (a fraud decline halves the 30 days): dated by the upgrade.
            base_failed = min(s.failed_at for s in owed if not s.upgrade)
            if entered - base_failed < FASTEST_SUSPENSION_SECONDS:
                dated_by_upgrade += 1
    return {
        **fair.bad_debt(entries, ledger, book.days),
        "bad_debt_entries_by_reason": dict(sorted(reasons.items())),
        "bad_debt_dated_by_an_older_upgrade_invoice": dated_by_upgrade,
    }


def first_decisions(book: Book, firsts: list[list]) -> dict:
    """Accounts whose first recorded decision of a case already put it above `notice`
    (`firsts`: account, the level the case's first Decision set). Accounts with an old
    invoice, the case where a ladder dated from the invoice's age would start high, are
    counted apart."""
    old_accounts = {truth.index for truth in book.accounts if any(c.old for c in truth.charges)}
    levels: Counter = Counter()
    above: set[int] = set()
    for account, level in firsts:
        levels[level] += 1
        if level not in NOT_ABOVE_NOTICE:
            above.add(account)
    return {
        "first_decision_above_notice": len(above),
        "first_decision_above_notice_with_an_old_invoice": len(above & old_accounts),
        "first_decision_levels": dict(sorted(levels.items())),
    }


def hard_cases_met(facts: dict) -> dict:
    """What the run met of the hard cases, besides the ledger's measures."""
    by_mode: dict[str, Counter] = {}
    for key, n in facts["counters"]["charge_events"].items():
        mode, kind = key.split(":")
        by_mode.setdefault(mode, Counter())[kind] += n
    unknown = facts["counters"]["charged_class_unknown"]
    counts = facts["counts"]
    return {
        "failed_first_attempts_by_charge_events": {
            mode: dict(sorted(kinds.items())) for mode, kinds in sorted(by_mode.items())
        },
        "late_charge_events_met": sum(by_mode.get("late", Counter()).values()),
        "missing_charge_events_met": sum(by_mode.get("missing", Counter()).values()),
        "old_invoices_first_seen": counts["old_invoices_seen"],
        "failure_lookup_in_gateway": facts["failure_lookup_available"],
        "failure_lookups_scripted": counts["failure_lookups_scripted"],
        "charged_while_decline_class_unknown": sum(unknown.values()),
        "charged_while_decline_class_unknown_by_class": dict(sorted(unknown.items())),
    }


def limbo(ledger: Ledger, facts: dict) -> dict:
    """Limbo by `fair.limbo`, as for the legacy model: an account has a next step while
    its case is open with a review planned, or a retry, cancellation or revert pending.
    The open cases by level, and unpaid upgrades held back with nothing scheduled, besides."""
    stalled = Counter(level for _, level in facts["stalled_cases"])
    open_cases = Counter(level for _, level in facts["open_cases"])
    return {
        **fair.limbo(ledger, cancelled=facts["cancelled"], planned=facts["planned"]),
        "limbo_by_level": dict(sorted(stalled.items())),
        "upgrade_held_back_open": stalled.get("upgrade_restricted", 0),
        "open_cases_at_end": dict(sorted(open_cases.items())),
    }


def lost_or_stuck(facts: dict) -> dict:
    counters, counts = facts["counters"], facts["counts"]
    events = counters["webhook_events_by_status"]
    items = counters["outbox_items_by_kind_status"]
    dead = sum(n for key, n in items.items() if key.rsplit(":", 1)[1] == "dead")
    refused = sum(n for status, n in counters["deliveries"].items() if status != "200")
    parts = {
        "webhook_events_unprocessed": sum(events.get(s, 0) for s in UNFINISHED_EVENTS),
        "webhook_deliveries_refused": refused,
        "outbox_items_dead": dead,
        "outbox_items_overdue": counts["outbox_items_overdue"],
        "invoices_missing_from_mirror": counts["invoices_missing_from_mirror"],
        "invoices_mirror_disagrees_with_stripe": counts["invoices_mirror_disagrees_with_stripe"],
    }
    return {
        "lost_or_stuck": parts,
        "lost_or_stuck_total": sum(parts.values()),
        "webhook_events_by_status": dict(sorted(events.items())),
        "outbox_items_by_kind_status": dict(sorted(items.items())),
    }


def disagreement(facts: dict) -> dict:
    counts = facts["counts"]
    keys = ("drift_recompute_changed", "standing_unacknowledged", "account_management_differs")
    return {
        "disagree_after_convergence": sum(counts[key] for key in keys),
        "drift_recompute_changed": counts["drift_recompute_changed"],
        "drift_recomputed_accounts": counts["drift_recomputed_accounts"],
        "standing_unacknowledged": counts["standing_unacknowledged"],
        "account_management_differs": counts["account_management_differs"],
    }


def service_report(book: Book, facts: dict) -> dict:
    """The service's figures from the merged facts of its run (`facts.merge`)."""
    ledger = ledger_from(book, facts["ledger"])
    counts = facts["counts"]
    return {
        **money_and_retries(ledger),
        **bad_debt(book, ledger, facts["bad_debt_episodes"]),
        **ledger_measures(ledger),
        **first_decisions(book, facts["first_decision_levels"]),
        **hard_cases_met(facts),
        **limbo(ledger, facts),
        **disagreement(facts),
        **lost_or_stuck(facts),
        # Not measured as a count: escalation never calls Account Management (the standing
        # leaves through the outbox), so nothing can block it; see "applied".
        "escalations_during_outage": {
            "applied": counts["escalations_during_outage"],
            "blocked": None,
        },
        "account_management": {
            "requests": counts["account_management_requests"],
            "refused_during_outage": counts["account_management_refused"],
        },
        "cancelled_by_the_ladder": counts["cancelled_by_the_ladder"],
        "paying_history_restricted_days": counts["paying_history_restricted_days"],
        "paying_history_beyond_upgrade_days": counts["paying_history_beyond_upgrade_days"],
        "paying_history_no_core_days": counts["paying_history_no_core_days"],
        "core_access_days_lost": counts["core_access_days_lost"],
        "deliveries": {
            "events_created": counts["events_created"],
            "delivered": sum(facts["counters"]["deliveries"].values()),
            "duplicates_delivered": counts["duplicates_delivered"],
            "delayed_1min_to_3h": counts["delayed"],
        },
        "series": facts["series"],
    }
