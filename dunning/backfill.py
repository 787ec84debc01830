"""Going live on an existing book: import from Stripe, then recompute every imported account.

The importer (billing_events.stripe_import) only fills the mirror; the engine runs here, so
billing_events never calls into dunning. The cursor lives in the database, so an import
interrupted anywhere (a page, a phase, the recompute) continues where it stopped.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from billing_events.stripe_import import ImportOptions, ImportStats, Progress, StripeImporter
from billing_events.stripe_retry import RetryPolicy
from core import clock
from dunning.engine import handle
from dunning.models import StripeImportCursor
from dunning.triggers import Trigger, TriggerKind

RECOMPUTE = "recompute"
SAVE_EVERY = 50  # accounts recomputed between cursor saves


class DatabaseCursor:
    """The import cursor as one row per scope (the options the import runs with)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def load(self) -> dict | None:
        row = StripeImportCursor.objects.filter(scope=self.scope).first()
        return row.state if row else None

    def save(self, state: dict) -> None:
        StripeImportCursor.objects.update_or_create(
            scope=self.scope, defaults={"state": state, "updated_at": clock.now()}
        )

    def clear(self) -> None:
        StripeImportCursor.objects.filter(scope=self.scope).delete()


@dataclass
class BackfillResult:
    stats: ImportStats
    recomputed: int
    changed: int  # accounts whose recompute changed something
    seconds: float


def import_and_recompute(
    options: ImportOptions,
    *,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    expected_accounts: int | None = None,
) -> BackfillResult:
    """Import the book in scope from Stripe, then ask the engine to recompute each imported
    account. Idempotent and resumable; the cursor is removed once everything is done."""
    progress = progress or (lambda line: None)
    started = time.monotonic()
    cursor = DatabaseCursor(options.scope())
    state = cursor.load() or {}
    if state.get("phase") == RECOMPUTE:
        stats = ImportStats(**state["stats"])
        progress(f"resuming the recompute after account {state['after']}")
    else:
        importer = StripeImporter(
            api_key=settings.STRIPE_API_KEY,
            api_base=settings.STRIPE_API_BASE,
            options=options,
            cursor=cursor,
            retry=RetryPolicy(sleep=sleep),
            progress=progress,
            now=clock.now,
            expected_accounts=expected_accounts,
        )
        stats = importer.run()
        state = {"phase": RECOMPUTE, "after": 0, "stats": stats.as_state()}
        cursor.save(state)
    recomputed, changed = _recompute(stats, after=state["after"], cursor=cursor, progress=progress)
    cursor.clear()
    return BackfillResult(stats, recomputed, changed, time.monotonic() - started)


def _recompute(stats: ImportStats, *, after: int, cursor: DatabaseCursor, progress: Progress):
    todo = [pk for pk in stats.account_ids if pk > after]
    started = time.monotonic()
    changed = 0
    for done, account_id in enumerate(todo, start=1):
        outcome = handle(Trigger(TriggerKind.DRIFT_DETECTED, account_id, source="import:stripe"))
        changed += bool(outcome.changes)
        if done % SAVE_EVERY == 0 or done == len(todo):
            cursor.save({"phase": RECOMPUTE, "after": account_id, "stats": stats.as_state()})
            rate = done / max(time.monotonic() - started, 1e-9)
            progress(
                f"phase=recompute accounts={done}/{len(todo)} rate={rate:.1f} accounts/s "
                f"eta={(len(todo) - done) / rate:.0f}s changed={changed}"
            )
    return len(todo), changed
