"""The outcome report: legacy vs this service on the same book, as data, a table and JSON.

The JSON holds no wall-clock figure, so the same seed gives the same file byte for byte.
"""

import json
from collections import Counter
from pathlib import Path

from simulation.ablation import claim_lines, format_ablation
from simulation.book import DAY, Book
from simulation.hardcases import drawn
from simulation.service_run import START


def book_summary(book: Book) -> dict:
    kinds: Counter = Counter()
    troubles: Counter = Counter()
    for truth in book.accounts:
        for charge in truth.charges:
            kinds[charge.kind] += 1
            if charge.trouble is not None:
                troubles[f"{charge.kind}:{charge.trouble.kind}"] += 1
    return {
        "accounts": len(book.accounts),
        "accounts_with_paying_history": sum(t.paying_history for t in book.accounts),
        "renewals": kinds["renewal"],
        "upgrades": kinds["upgrade"],
        "failures_drawn": dict(sorted(troubles.items())),
        "monthly_revenue": sum(t.plan for t in book.accounts),
        "hard_cases": drawn(book),
    }


def build_report(book: Book, legacy: dict, service: dict) -> dict:
    start, end = book.outage
    return {
        "parameters": {
            "accounts": len(book.accounts),
            "days": book.days,
            "seed": book.seed,
            "start": START.isoformat(),
            "currency": "usd",
            "legacy_retry_days": legacy["retry_days"],
        },
        "mix": book.mix.as_dict(),
        "book": book_summary(book),
        "account_management_outage": {
            "start_day": round(start / DAY, 3),
            "hours": round((end - start) / 3600, 2),
        },
        "legacy": legacy,
        "service": service,
    }


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)


def _money(minor: int | None) -> str:
    return "-" if minor is None else f"{minor / 100:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _int(value: object) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def rows(report: dict) -> list[tuple[str, str, str]]:
    """(metric, legacy, this service), in the order a payments lead reads them."""
    legacy, service = report["legacy"], report["service"]

    def both(key: str, fmt=_int) -> tuple[str, str]:
        return fmt(legacy.get(key)), fmt(service.get(key))

    def upgrade_rate(side: dict) -> str:
        return (
            f"{side['upgrade_only_bad_debt_per_day']:.2f} / "
            f"{side['upgrade_only_bad_debt_per_year']:,.0f}"
        )

    def median(side: dict) -> str:
        return (
            f"{_days(side['median_days_to_recovery'])} (p90 {_days(side['p90_days_to_recovery'])})"
        )

    def outage(side: dict) -> str:
        esc = side["escalations_during_outage"]
        return f"{esc['applied']} / {_int(esc['blocked'])}"

    def cap(side: dict) -> str:
        return _int(side["network_cap"]["attempts_over_cap"])

    return [
        ("money failed (first attempt), USD", *both("failed_amount", _money)),
        ("money recovered, USD", *both("recovered_amount", _money)),
        ("recovery rate", *both("recovery_rate", _pct)),
        ("  failed money back within 7 days", *both("recovered_within_7_days", _pct)),
        ("  failed money back within 14 days", *both("recovered_within_14_days", _pct)),
        ("upgrade-only bad debt (accounts put in bad debt)", *both("upgrade_only_bad_debt")),
        (
            "  after Stripe wrote the upgrade invoice off",
            *both("upgrade_only_bad_debt_after_an_upgrade_write_off"),
        ),
        ("  per day / per year, this book", upgrade_rate(legacy), upgrade_rate(service)),
        ("bad-debt entries, all reasons", *both("bad_debt_entries")),
        (
            "  brought forward by an older unpaid upgrade invoice",
            "n/a",
            _int(service["bad_debt_dated_by_an_older_upgrade_invoice"]),
        ),
        ("accounts in limbo (end of run)", *both("limbo")),
        ("  of which owing only upgrades", *both("limbo_upgrade_only")),
        ("retries", *both("retries")),
        ("retries on hard declines", *both("retries_on_hard")),
        ("retries on fraud declines", *both("retries_on_fraud")),
        ("retries on authentication-required", *both("retries_on_auth_required")),
        (
            "retries on a card after its hard/fraud decline",
            *both("retries_after_a_hard_or_fraud_decline_on_the_card"),
        ),
        (
            "retries while the latest decline code was unknown",
            "n/a",
            _int(service["charged_while_decline_class_unknown"]),
        ),
        (
            "accounts whose first decision was above notice",
            "n/a",
            _int(service["first_decision_above_notice"]),
        ),
        (
            "  of which with an invoice first seen 20-60 days old",
            "n/a",
            _int(service["first_decision_above_notice_with_an_old_invoice"]),
        ),
        ("network-cap violations (>15 attempts/card/30 d)", cap(legacy), cap(service)),
        ("median days to recovery", median(legacy), median(service)),
        ("accounts whose stores disagree after convergence", *both("disagree_after_convergence")),
        ("events lost or stuck", *both("lost_or_stuck_total")),
        (
            "paying-history customers restricted, account-days",
            *both("paying_history_restricted_days", lambda v: f"{v:,.0f}"),
        ),
        (
            "  of which beyond the upgrade",
            *both("paying_history_beyond_upgrade_days", lambda v: f"{v:,.0f}"),
        ),
        (
            "  of which without core access",
            *both("paying_history_no_core_days", lambda v: f"{v:,.0f}"),
        ),
        ("core-access account-days lost, all accounts", *both("core_access_days_lost")),
        ("escalations during the AM outage (applied / blocked)", outage(legacy), outage(service)),
        *hard_case_rows(report),
    ]


def hard_case_rows(report: dict) -> list[tuple[str, str, str]]:
    """How often each world met each hard case (the book's draws are in the notes)."""
    legacy, service = report["legacy"], report["service"]
    old_in_legacy = sum(legacy["old_invoices_by_status_at_end"].values())
    return [
        ("hard cases met in the run", "", ""),
        (
            "  upgrade invoices written off, base plan paid",
            *(_int(side["upgrade_write_offs_met"]) for side in (legacy, service)),
        ),
        (
            "  failed first attempts, charge events 1-12 h late",
            "n/a",
            _int(service["late_charge_events_met"]),
        ),
        (
            "  failed first attempts, charge events never sent",
            "n/a",
            _int(service["missing_charge_events_met"]),
        ),
        (
            "  invoices first seen 20-60 days old",
            _int(old_in_legacy),
            _int(service["old_invoices_first_seen"]),
        ),
    ]


def hard_case_note(report: dict) -> str:
    drawn = report["book"]["hard_cases"]
    service = report["service"]
    lookup = (
        f"{service['failure_lookups_scripted']:,} failure lookup(s) scripted in the gateway"
        if service["failure_lookup_in_gateway"]
        else "the gateway has no failure lookup yet: none scripted"
    )
    return (
        f"book: hard cases drawn: {drawn['upgrade_invoices_stripe_marks_uncollectible']} "
        f"upgrade write-off(s), {drawn['late_charge_events']} late charge event(s) "
        f"{drawn['late_charge_events_by_class']}, {drawn['missing_charge_events']} missing "
        f"{drawn['missing_charge_events_by_class']}, {drawn['invoices_first_seen_old']} old "
        f"invoice(s); {lookup}"
    )


def format_table(report: dict) -> str:
    table = rows(report)
    width = max(len(label) for label, _, _ in table)
    left = max(len("legacy"), *(len(v) for _, v, _ in table))
    right = max(len("this service"), *(len(v) for _, _, v in table))
    params = report["parameters"]
    outage = report["account_management_outage"]
    lines = [
        f"{params['accounts']:,} accounts, {params['days']} days, seed {params['seed']}; "
        f"Account Management down {outage['hours']:g} h from day {outage['start_day']:.1f}",
        f"{'':{width}}  {'legacy':>{left}}  {'this service':>{right}}",
        f"{'-' * width}  {'-' * left}  {'-' * right}",
    ]
    lines += [f"{label:{width}}  {a:>{left}}  {b:>{right}}" for label, a, b in table]
    service = report["service"]
    notes = [
        f"service: {service['cancelled_by_the_ladder']} subscription(s) cancelled at the end "
        f"of the ladder; limbo by level: {service['limbo_by_level'] or 'none'}",
        f"service: {service['deliveries']['delivered']:,} webhook deliveries "
        f"({service['deliveries']['duplicates_delivered']:,} duplicates, "
        f"{service['deliveries']['delayed_1min_to_3h']:,} held back 1 min-3 h, all in a "
        "shuffled order), "
        f"Account Management refused {service['account_management']['refused_during_outage']:,} "
        "standing update(s) during the outage, all retried",
        hard_case_note(report),
    ]
    return "\n".join([*lines, "", *notes, *ablation_section(report)])


def ablation_section(report: dict) -> list[str]:
    """The ablation table with its spread across seeds, the claims and the definitions."""
    ablation = report.get("ablation")
    if not ablation:
        return []
    seeds, service_seeds = ablation["seeds"], ablation["service_seeds"]
    legacy, design = next(iter(ablation["table"])), "the whole design (modelled)"
    lines = [
        "",
        f"ablation: the same books, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}); mean "
        "[min-max] across seeds; every row but the last is the model "
        f"(simulation/model.py), the last is the real service on seed(s) "
        f"{', '.join(map(str, service_seeds))}",
        format_ablation(ablation["table"]),
        "",
        *claim_lines(ablation["claims"]["service_vs_legacy"], "this service", legacy),
        *claim_lines(ablation["claims"]["design_vs_legacy"], design, legacy),
        "",
        "definitions (the same code counts them for every row):",
        *(f"  {key}: {text}" for key, text in ablation["definitions"].items()),
    ]
    return lines
