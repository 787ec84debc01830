"""The service's side of the report, read from its own stores after convergence, checked
against Stripe's side (the run's ledger)."""

from collections import Counter

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
from simulation import fair
from simulation.book import Book
from simulation.hardcases import ledger_measures, owed_at
from simulation.ledger import Ledger, money_and_retries
from simulation.service_run import START, ServiceRun, at, index_of

UNFINISHED_EVENTS = ("received", "failed", "dead")
NOT_ABOVE_NOTICE = ("none", "notice")


FASTEST_SUSPENSION_SECONDS = 15 * 86400


def bad_debt(book: Book, ledger: Ledger) -> dict:
    """Every bad-debt episode, counted by `fair.bad_debt` as the legacy flag is; and the
    episodes the base ladder entered sooner than the base plan's own failure allows."""
    reasons: Counter = Counter()
    entries, dated_by_upgrade = [], 0
    for customer, entered_at, reason in BadDebtEpisode.objects.values_list(
        "account__stripe_customer_id", "entered_at", "reason"
    ):
        reasons[reason] += 1
        account, entered = index_of(customer), (entered_at - START).total_seconds()
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


def first_decisions(book: Book) -> dict:
    """Accounts whose first recorded decision of a case already put it above `notice`: the
    level the case's first Decision set (its `case.level` change), the first being the
    lowest id (decisions are numbered as they are made). Accounts with an old invoice, the
    case where a ladder dated from the invoice's age would start high, are counted apart."""
    firsts = (
        Decision.objects.filter(case__isnull=False)
        .values("case_id")
        .annotate(first=Min("pk"))
        .values_list("first", flat=True)
    )
    old_accounts = {truth.customer for truth in book.accounts if any(c.old for c in truth.charges)}
    levels: Counter = Counter()
    above: set[str] = set()
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
        level = level or "none"
        levels[level] += 1
        if level not in NOT_ABOVE_NOTICE:
            above.add(customer)
    return {
        "first_decision_above_notice": len(above),
        "first_decision_above_notice_with_an_old_invoice": len(above & old_accounts),
        "first_decision_levels": dict(sorted(levels.items())),
    }


def hard_cases_met(run: ServiceRun) -> dict:
    """What the run met of the hard cases, besides the ledger's measures."""
    by_mode: dict[str, Counter] = {}
    for key, n in run.charge_events.items():
        mode, kind = key.split(":")
        by_mode.setdefault(mode, Counter())[kind] += n
    unknown = run.charged_class_unknown
    return {
        "failed_first_attempts_by_charge_events": {
            mode: dict(sorted(kinds.items())) for mode, kinds in sorted(by_mode.items())
        },
        "late_charge_events_met": sum(by_mode.get("late", Counter()).values()),
        "missing_charge_events_met": sum(by_mode.get("missing", Counter()).values()),
        "old_invoices_first_seen": run.old_invoices_seen,
        "failure_lookup_in_gateway": run.failure_lookup_available,
        "failure_lookups_scripted": run.failure_lookups_scripted,
        "charged_while_decline_class_unknown": sum(unknown.values()),
        "charged_while_decline_class_unknown_by_class": dict(sorted(unknown.items())),
    }


def limbo(book: Book, run: ServiceRun) -> dict:
    """Limbo by `fair.limbo`, as for the legacy model: an account has a next step while
    its case is open with a review planned, or a retry, cancellation or revert pending.
    The open cases by level, and unpaid upgrades held back with nothing scheduled, besides."""
    pending = set(
        OutboxItem.objects.filter(
            status=OutboxItem.Status.PENDING,
            kind__in=[
                OutboxItem.Kind.PAYMENT_RETRY,
                OutboxItem.Kind.CANCEL_SUBSCRIPTION,
                OutboxItem.Kind.REVERT_UPGRADE,
            ],
        ).values_list("account__stripe_customer_id", flat=True)
    )
    planned = {index_of(customer) for customer in pending}
    stalled: Counter = Counter()
    for customer, level, review in DunningCase.objects.filter(state__in=IN_DUNNING).values_list(
        "account__stripe_customer_id", "level", "next_review_at"
    ):
        if review is not None:
            planned.add(index_of(customer))
        elif index_of(customer) not in planned:
            stalled[level] += 1
    open_cases = Counter(
        DunningCase.objects.filter(state__in=IN_DUNNING).values_list("level", flat=True)
    )
    return {
        **fair.limbo(run.ledger, cancelled=run.cancelled, planned=planned),
        "limbo_by_level": dict(sorted(stalled.items())),
        "upgrade_held_back_open": stalled.get("upgrade_restricted", 0),
        "open_cases_at_end": dict(sorted(open_cases.items())),
    }


def lost_or_stuck(book: Book, run: ServiceRun) -> dict:
    end = at(book.end)
    events = Counter(WebhookEvent.objects.values_list("status", flat=True))
    items = Counter(OutboxItem.objects.values_list("kind", "status"))
    dead = sum(n for (kind, status), n in items.items() if status == "dead")
    overdue = OutboxItem.objects.filter(
        status=OutboxItem.Status.PENDING, next_attempt_at__lt=end
    ).count()
    # The run's database holds nothing else (run_service checks it starts empty).
    mirror = dict(Invoice.objects.values_list("stripe_invoice_id", "status").iterator())
    missing = sum(1 for invoice_id in run.ledger.invoices if invoice_id not in mirror)
    mismatched = sum(
        1
        for invoice_id, state in run.ledger.invoices.items()
        if invoice_id in mirror and mirror[invoice_id] != state.status
    )
    refused = sum(n for status, n in run.deliveries.items() if status != 200)
    parts = {
        "webhook_events_unprocessed": sum(events.get(s, 0) for s in UNFINISHED_EVENTS),
        "webhook_deliveries_refused": refused,
        "outbox_items_dead": dead,
        "outbox_items_overdue": overdue,
        "invoices_missing_from_mirror": missing,
        "invoices_mirror_disagrees_with_stripe": mismatched,
    }
    return {
        "lost_or_stuck": parts,
        "lost_or_stuck_total": sum(parts.values()),
        "webhook_events_by_status": dict(sorted(events.items())),
        "outbox_items_by_kind_status": {
            f"{kind}:{status}": n for (kind, status), n in sorted(items.items())
        },
    }


def disagreement(run: ServiceRun) -> dict:
    standing = list(
        AccountStanding.objects.values_list(
            "account__stripe_customer_id", "requested", "acknowledged"
        )
    )
    unacknowledged = sum(1 for _, requested, acknowledged in standing if requested != acknowledged)
    # What Account Management itself holds; "good" is what it assumes when never told.
    am_differs = sum(
        1
        for customer, requested, _ in standing
        if run.am_standing.get(customer, "good") != requested
    )
    return {
        "disagree_after_convergence": run.drift_changed + unacknowledged + am_differs,
        "drift_recompute_changed": run.drift_changed,
        "drift_recomputed_accounts": run.drift_accounts,
        "standing_unacknowledged": unacknowledged,
        "account_management_differs": am_differs,
    }


def outage_escalations(book: Book) -> dict:
    """Level changes the engine applied while Account Management was down."""
    start, end = (at(t) for t in book.outage)
    applied = 0
    for changes in Decision.objects.filter(decided_at__gte=start, decided_at__lt=end).values_list(
        "changes", flat=True
    ):
        applied += any(c.get("store") == "case" and c.get("field") == "level" for c in changes)
    # Not measured as a count: escalation never calls Account Management (the standing
    # leaves through the outbox), so nothing can block it; see "applied".
    return {"applied": applied, "blocked": None}


def service_report(book: Book, run: ServiceRun) -> dict:
    money = money_and_retries(run.ledger)
    return {
        **money,
        **bad_debt(book, run.ledger),
        **ledger_measures(run.ledger),
        **first_decisions(book),
        **hard_cases_met(run),
        **limbo(book, run),
        **disagreement(run),
        **lost_or_stuck(book, run),
        "escalations_during_outage": outage_escalations(book),
        "account_management": run.account_management,
        "cancelled_by_the_ladder": DunningCase.objects.filter(resolution="cancelled").count(),
        "paying_history_restricted_days": run.restricted_days,
        "paying_history_beyond_upgrade_days": run.beyond_upgrade_days,
        "paying_history_no_core_days": run.no_core_days,
        "core_access_days_lost": run.core_days_lost,
        "deliveries": {
            "events_created": run.events_created,
            "delivered": sum(run.deliveries.values()),
            "duplicates_delivered": run.duplicates_delivered,
            "delayed_1min_to_3h": run.delayed,
        },
        "series": {
            "levels": run.levels,
            "bad_debt_open": run.bad_debt_by_day,
            "cancelled_total": run.cancelled_by_day,
        },
    }
