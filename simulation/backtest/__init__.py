"""The backtest: a window of the stored Stripe events replayed through the real service
twice, in scratch databases, under the active policy and under a candidate, and the
accounts whose outcome would have changed (issue #18).

    policies  the two documents compared, read from the configured database
    history   the window's stored events, which of them the service caused, each invoice's
              charges at Stripe and each decline class's observed rate
    gateway   Stripe answering a replay's retries: from history where it knows, else rate
    echo      Stripe's events about a replay's own retries, cancellations and reverts
    replay    one replay in the current database, on the test clock
    outcomes  what each account ended with; the comparison of two
    report    the report (dict, table, JSON)

Product apps never import this (tests/test_architecture.py).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from dunning.policy_document import policy_from_document
from simulation.backtest.history import read_history
from simulation.backtest.policies import BacktestError
from simulation.backtest.replay import replay
from simulation.backtest.report import SIDES, build


def backtest(
    *,
    since: datetime,
    until: datetime | None,
    documents: dict[str, dict],
    policies: dict[str, str],
    scratch: Callable[[str], AbstractContextManager],
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Read the window from the configured database, then replay it once per side, each in
    the database `scratch(side)` switches to (and drops) around it."""
    history = read_history(
        since=since, until=until, policy=policy_from_document(documents["active"], version="a")
    )
    if not history.replayed:
        raise BacktestError(f"no stored events received from {since.isoformat()} on")
    end = until or history.replayed[-1].received_at
    runs, seconds = {}, {}
    for side in SIDES:
        if progress:
            progress(f"replaying {len(history.replayed)} events under the {side} policy")
        with scratch(side):
            runs[side] = replay(
                history,
                document=documents[side],
                start=since,
                end=end,
                label=side,
                progress=progress,
            )
        seconds[side] = runs[side].seconds
    window = {"since": since.isoformat(), "until": end.isoformat()}
    report = build(history, runs, window=window, policies=policies)
    report["_seconds"] = seconds  # wall clock: removed before writing JSON
    return report


__all__ = ["BacktestError", "backtest"]
