"""The backtest: a window of the stored Stripe events replayed through the real service
twice, in scratch databases, under the active policy and under a candidate, and the
accounts whose outcome would have changed (issue #18).

    policies  the two documents compared, read from the configured database
    history   the window's stored events, which of them the service caused, each invoice's
              charges at Stripe and each decline class's observed rate
    gateway   Stripe answering a replay's retries: from history where it knows, else rate
    echo      Stripe's events about a replay's own retries, cancellations and reverts
    independent  the accounts no policy can change, left out of both replays
    replay    one replay in the current database, on the test clock
    scratch   the scratch databases (one migrated template, cloned per side), and the two
              replays at once in forked processes
    outcomes  what each account ended with; the comparison of two
    report    the report (dict, table, JSON)

Product apps never import this (tests/test_architecture.py).
"""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from dunning.policy_document import policy_from_document
from simulation.backtest.history import read_history
from simulation.backtest.independent import leave_out_policy_independent
from simulation.backtest.outcomes import AccountOutcome
from simulation.backtest.policies import BacktestError
from simulation.backtest.replay import Replay, replay
from simulation.backtest.report import SIDES, build
from simulation.backtest.scratch import run_sides


def backtest(
    *,
    since: datetime,
    until: datetime | None,
    documents: dict[str, dict],
    policies: dict[str, str],
    databases: Callable[[tuple[str, ...]], AbstractContextManager[dict[str, str]]],
    jobs: int = 1,
    every_account: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Read the window from the configured database, then replay it once per side, each on
    the scratch database `databases(SIDES)` names for it (made and dropped around them),
    one after the other unless `jobs` is 2 (both at once). Unless `every_account`, the
    accounts no policy can change are left out of both replays (`independent`) and given
    the empty outcome."""
    started = time.perf_counter()
    history = read_history(
        since=since, until=until, policy=policy_from_document(documents["active"], version="a")
    )
    if not history.replayed:
        raise BacktestError(f"no stored events received from {since.isoformat()} on")
    end = until or history.replayed[-1].received_at
    if not every_account:
        history = leave_out_policy_independent(history, since=since, until=until)
    seconds = {"read": time.perf_counter() - started}

    def work(side: str) -> Replay:
        if progress:
            progress(f"replaying {len(history.replayed)} events under the {side} policy")
        return replay(
            history,
            document=documents[side],
            start=since,
            end=end,
            label=side,
            progress=(lambda text: progress(f"{side}: {text}")) if progress else None,
        )

    with databases(SIDES) as names:
        seconds["scratch_databases"] = time.perf_counter() - started - seconds["read"]
        runs = run_sides(names, work, jobs=jobs)
    for side, run in runs.items():
        for customer in history.independent_accounts:
            run.outcomes.setdefault(customer, AccountOutcome(customer))
        seconds[side] = run.seconds
    window = {"since": since.isoformat(), "until": end.isoformat()}
    report = build(history, runs, window=window, policies=policies)
    report["_seconds"] = seconds  # wall clock: removed before writing JSON
    return report


__all__ = ["BacktestError", "backtest"]
