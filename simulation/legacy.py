"""The legacy policy as a fair baseline: the model (`model`) with every part of the
service's design switched off, no more.

Its faults are the ones DESIGN.md lists, and only those:

- one retry cadence for every decline class (hard, fraud and authentication-required
  included), on whatever card is on file then; a card update does not ask for a retry.
  By default that cadence is the service's own soft cadence (7 retries, days 1-23), so
  the comparison measures classification, not retry density; `retry_days` takes another
  (the seed's 3/8/15/22: `manage.py simulate --legacy-retry-days 3,8,15,22`);
- a binary bad-debt flag, which bans the account outright (no ladder), when an invoice's
  retries run out or finance writes it off;
- upgrade/proration invoices treated like any other (an unpaid upgrade alone puts a paying
  account in bad debt);
- nothing ever cancels: exhausted accounts are left in limbo;
- a synchronous Account Management call: during the outage the escalation (or lifting) is
  dropped into a stuck-events table and never replayed.

Money that comes in (a retry, the customer on-session, out of band) lifts the flag once
nothing exhausted is owed. An old invoice starts its retry clock when first heard of, as
the service's handling does. Where unsure, the model is generous to the legacy system.
"""

from dataclasses import replace

from simulation.book import Book
from simulation.model import SOFT_CADENCE_DAYS, Design, ModelRun, model_report, run_model

LEGACY_RETRY_DAYS = SOFT_CADENCE_DAYS
SEED_LEGACY_RETRY_DAYS = (3, 8, 15, 22)  # the seed's legacy model: fewer, sparser retries
LEGACY = Design("legacy", classes=False, ladder=False, upgrade_rule=False, outbox=False)


def legacy_design(retry_days: tuple[float, ...] | None = None) -> Design:
    return replace(LEGACY, retry_days=tuple(retry_days or LEGACY_RETRY_DAYS))


def run_legacy(book: Book, retry_days: tuple[float, ...] | None = None) -> ModelRun:
    return run_model(book, legacy_design(retry_days))


def legacy_report(book: Book, run: ModelRun) -> dict:
    report = model_report(book, run)
    report["retry_days"] = list(run.design.retry_days)
    # Legacy restricts nothing short of the ban: every restricted day is a day without core.
    report["paying_history_restricted_days"] = report["paying_history_no_core_days"]
    report["paying_history_beyond_upgrade_days"] = report["paying_history_no_core_days"]
    return report
