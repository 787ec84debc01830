"""What a run through the service leaves to measure, as plain values: read from the run's
stores and its `ServiceRun` once it has converged, merged across shards, and measured by
`measure` (pure Python, no database).

Why facts and not figures: a shard of the book (`--workers N`) can add up counts, but not
medians, percentiles, rates or "the account's first decision"; so every shard hands over
the records those are computed from (per account, per invoice, per attempt), and the
report is computed once from the merged records. The single-process run goes through the
same `collect` -> JSON -> `merge` -> `measure` path, so both give the same report byte
for byte whenever each account's run is the same (see `driver` and `stripe_side`: the
delivery noise is drawn per account).

Merging: lists are concatenated and put in one canonical order (by account; within an
account, in the order the shard recorded them), counts and counters are summed, the daily
series added day by day.
"""

import json
from collections import Counter
from dataclasses import astuple, fields

from django.db.models import Min

from billing_events.models import Invoice, WebhookEvent
from dunning.models import (
    IN_DUNNING,
    AccountStanding,
    BadDebtEpisode,
    Decision,
    DunningCase,
    OutboxItem,
)
from simulation.book import Book
from simulation.ledger import Attempt, InvoiceState, Ledger
from simulation.service_run import START, ServiceRun, at, index_of

# InvoiceState's fields after `charge` (stored as the invoice id and found in the book).
INVOICE_FIELDS = [f.name for f in fields(InvoiceState)][1:]
PLANNED_KINDS = (
    OutboxItem.Kind.PAYMENT_RETRY,
    OutboxItem.Kind.CANCEL_SUBSCRIPTION,
    OutboxItem.Kind.REVERT_UPGRADE,
)
LIST_FACTS = ("bad_debt_episodes", "first_decision_levels", "stalled_cases", "open_cases")
SET_FACTS = ("planned", "cancelled")


def ledger_facts(ledger: Ledger) -> dict:
    invoices = [
        [state.charge.invoice_id, *astuple(state)[1:]]
        for account in sorted(ledger.by_account)
        for state in (ledger.invoices[i] for i in ledger.by_account[account])
    ]
    return {"invoices": invoices, "attempts": [list(astuple(a)) for a in ledger.attempts]}


def ledger_from(book: Book, facts: dict) -> Ledger:
    charges = {c.invoice_id: c for truth in book.accounts for c in truth.charges}
    ledger = Ledger()
    for invoice_id, *values in facts["invoices"]:
        state = InvoiceState(charges[invoice_id], **dict(zip(INVOICE_FIELDS, values, strict=True)))
        ledger.invoices[invoice_id] = state
        ledger.by_account[state.account].append(invoice_id)
    ledger.attempts = [Attempt(*values) for values in facts["attempts"]]
    return ledger


def _first_decision_levels() -> list[list]:
    """Each case's first decision (the lowest id: decisions are numbered as they are made)
    and the level it set the case to ("none" when it set none)."""
    firsts = (
        Decision.objects.filter(case__isnull=False)
        .values("case_id")
        .annotate(first=Min("pk"))
        .values_list("first", flat=True)
    )
    levels = []
    for customer, changes in Decision.objects.filter(pk__in=list(firsts)).values_list(
        "account__stripe_customer_id", "changes"
    ):
        level = next(
            (
                change.get("to")
                for change in changes
                if change.get("store") == "case" and change.get("field") == "level"
            ),
            None,
        )
        levels.append([index_of(customer), level or "none"])
    return levels


def _cases() -> tuple[list[int], list[list], list[list]]:
    """Accounts with a next step planned (a pending retry, cancellation or revert, or an
    open case with a review planned), the open cases with none, and every open case."""
    planned = {
        index_of(customer)
        for customer in OutboxItem.objects.filter(
            status=OutboxItem.Status.PENDING, kind__in=PLANNED_KINDS
        ).values_list("account__stripe_customer_id", flat=True)
    }
    cases = list(
        DunningCase.objects.filter(state__in=IN_DUNNING).values_list(
            "account__stripe_customer_id", "level", "next_review_at"
        )
    )
    for customer, _, review in cases:
        if review is not None:
            planned.add(index_of(customer))
    stalled = [
        [index_of(customer), level]
        for customer, level, review in cases
        if review is None and index_of(customer) not in planned
    ]
    return sorted(planned), stalled, [[index_of(c), level] for c, level, _ in cases]


def _mirror(run: ServiceRun) -> tuple[int, int]:
    """Stripe's invoices (this run's ledger) missing from the service's mirror, and those
    whose status there differs. The run's database holds nothing else."""
    mirror = dict(Invoice.objects.values_list("stripe_invoice_id", "status").iterator())
    missing = sum(1 for invoice_id in run.ledger.invoices if invoice_id not in mirror)
    mismatched = sum(
        1
        for invoice_id, state in run.ledger.invoices.items()
        if invoice_id in mirror and mirror[invoice_id] != state.status
    )
    return missing, mismatched


def _standing(run: ServiceRun) -> tuple[int, int]:
    """Standings requested but not acknowledged, and those Account Management does not
    hold ("good" is what it assumes when never told)."""
    standing = list(
        AccountStanding.objects.values_list(
            "account__stripe_customer_id", "requested", "acknowledged"
        )
    )
    unacknowledged = sum(1 for _, requested, acknowledged in standing if requested != acknowledged)
    differs = sum(
        1
        for customer, requested, _ in standing
        if run.am_standing.get(customer, "good") != requested
    )
    return unacknowledged, differs


def _outage_level_changes(book: Book) -> int:
    """Level changes the engine applied while Account Management was down."""
    start, end = (at(t) for t in book.outage)
    applied = 0
    for changes in Decision.objects.filter(decided_at__gte=start, decided_at__lt=end).values_list(
        "changes", flat=True
    ):
        applied += any(c.get("store") == "case" and c.get("field") == "level" for c in changes)
    return applied


def collect(book: Book, run: ServiceRun) -> dict:
    """The run's facts, read from its stores once it has converged (plain JSON values)."""
    missing, mismatched = _mirror(run)
    unacknowledged, am_differs = _standing(run)
    planned, stalled, open_cases = _cases()
    end = at(book.end)
    items = Counter(OutboxItem.objects.values_list("kind", "status"))
    return {
        "ledger": ledger_facts(run.ledger),
        "bad_debt_episodes": [
            [index_of(customer), (entered_at - START).total_seconds(), reason]
            for customer, entered_at, reason in BadDebtEpisode.objects.values_list(
                "account__stripe_customer_id", "entered_at", "reason"
            )
        ],
        "first_decision_levels": _first_decision_levels(),
        "planned": planned,
        "stalled_cases": stalled,
        "open_cases": open_cases,
        "cancelled": sorted(run.cancelled),
        "counters": {
            "charge_events": dict(run.charge_events),
            "charged_class_unknown": dict(run.charged_class_unknown),
            "deliveries": {str(status): n for status, n in run.deliveries.items()},
            "webhook_events_by_status": dict(
                Counter(WebhookEvent.objects.values_list("status", flat=True))
            ),
            "outbox_items_by_kind_status": {f"{k}:{s}": n for (k, s), n in items.items()},
        },
        "counts": {
            "outbox_items_overdue": OutboxItem.objects.filter(
                status=OutboxItem.Status.PENDING, next_attempt_at__lt=end
            ).count(),
            "invoices_missing_from_mirror": missing,
            "invoices_mirror_disagrees_with_stripe": mismatched,
            "standing_unacknowledged": unacknowledged,
            "account_management_differs": am_differs,
            "drift_recompute_changed": run.drift_changed,
            "drift_recomputed_accounts": run.drift_accounts,
            "escalations_during_outage": _outage_level_changes(book),
            "cancelled_by_the_ladder": DunningCase.objects.filter(resolution="cancelled").count(),
            "paying_history_restricted_days": run.restricted_days,
            "paying_history_beyond_upgrade_days": run.beyond_upgrade_days,
            "paying_history_no_core_days": run.no_core_days,
            "core_access_days_lost": run.core_days_lost,
            "events_created": run.events_created,
            "duplicates_delivered": run.duplicates_delivered,
            "delayed": run.delayed,
            "old_invoices_seen": run.old_invoices_seen,
            "failure_lookups_scripted": run.failure_lookups_scripted,
            "account_management_requests": run.account_management["requests"],
            "account_management_refused": run.account_management["refused_during_outage"],
        },
        "series": {
            "levels": run.levels,
            "bad_debt_open": run.bad_debt_by_day,
            "cancelled_total": run.cancelled_by_day,
        },
        "failure_lookup_available": run.failure_lookup_available,
    }


def _summed(dicts: list[dict]) -> dict:
    total: Counter = Counter()
    for counts in dicts:
        total.update(counts)
    return {key: total[key] for key in sorted(total)}


def _by_account(rows: list[list]) -> list[list]:
    """One canonical order: by account, then as recorded (a stable sort)."""
    return sorted(rows, key=lambda row: row[0])


def _added(series: list[list[int]]) -> list[int]:
    return [sum(day) for day in zip(*series, strict=True)]


def merge(shards: list[dict]) -> dict:
    """The facts of the whole book from its shards' (or of one run: put in the same order)."""
    shards = json.loads(json.dumps(shards))  # what a shard's result looks like on the wire
    invoices = [row for shard in shards for row in shard["ledger"]["invoices"]]
    attempts = [row for shard in shards for row in shard["ledger"]["attempts"]]
    levels = shards[0]["series"]["levels"]
    return {
        "ledger": {
            "invoices": sorted(invoices, key=lambda row: row[1]),
            "attempts": sorted(attempts, key=lambda row: row[1]),
        },
        **{key: _by_account([row for s in shards for row in s[key]]) for key in LIST_FACTS},
        **{key: sorted({a for s in shards for a in s[key]}) for key in SET_FACTS},
        "counters": {
            key: _summed([s["counters"][key] for s in shards]) for key in shards[0]["counters"]
        },
        "counts": _summed([s["counts"] for s in shards]),
        "series": {
            "levels": {
                level: _added([s["series"]["levels"][level] for s in shards]) for level in levels
            },
            "bad_debt_open": _added([s["series"]["bad_debt_open"] for s in shards]),
            "cancelled_total": _added([s["series"]["cancelled_total"] for s in shards]),
        },
        "failure_lookup_available": all(s["failure_lookup_available"] for s in shards),
    }
