"""The test clock walked in memory, for a run that is the only process on its scratch
database (a simulation, each of its shards, a backtest's replay).

`ClockWalk.advance` runs what `test_clock.advance(to=...)` runs, at the same moments and
in the same order (what is due now, each due moment on the way, then `to`), so a report is
the same to the byte. What it leaves out is what `test_clock.advance` does for other
processes, of which there are none here: its advisory lock, the wait for items workers
hold, the clock's row written at every moment and read at every `clock.now()` (the service
reads the walk's time instead, `clock_in_memory`). The next due moment comes from one
statement (`simulation.due.Probe`), and `run_due` runs only where something is due. That
overhead was about a third of a replay's time, and a quarter of a simulation's.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from core import clock
from dunning import test_clock
from dunning.apps import stored_test_clock
from dunning.models import OutboxItem, TestClock
from simulation.due import Due, Probe


@contextmanager
def clock_in_memory(reader: Callable[[], datetime]) -> Iterator[None]:
    """The service reads the test clock from `reader` instead of from its row. The row is
    there so that web, worker and beat agree; a walk is one process and the clock's only
    mover."""
    clock.read_test_clock_with(reader)
    try:
        yield
    finally:
        clock.read_test_clock_with(stored_test_clock)


class ClockWalk:
    def __init__(self, now: datetime, *, on_run: Callable[[], None] = lambda: None) -> None:
        self.now = now
        self.probe = Probe()
        self.due_now = True  # something may be due at now: the pump and the outbox run
        self.on_run = on_run  # told after every `run_due`
        TestClock.objects.update_or_create(pk=TestClock.SINGLETON, defaults={"now": now})

    @contextmanager
    def held(self) -> Iterator[None]:
        """The service on this walk's clock; the row gets the walk's time at the end."""
        try:
            with clock_in_memory(lambda: self.now):
                yield
        finally:
            TestClock.objects.filter(pk=TestClock.SINGLETON).update(now=self.now)

    def due(self) -> Due:
        return self.probe.at(self.now)

    def advance(self, to: datetime, due: Due | None = None) -> bool:
        """Walk to `to` (`due`: the probe at now, if the caller has it). False, and nothing
        run, when `to` is not later than now. Leaves `due_now` set when something may
        still be due at `to`."""
        due = due or self.due()
        if to <= self.now:
            self.due_now = due.now
            return False
        if due.leased:  # no worker holds an item here: a lease left is given back
            OutboxItem.objects.filter(
                status=OutboxItem.Status.PENDING, claimed_until__isnull=False
            ).update(claimed_until=None)
        if due.now:
            due = self.run_due()
        while (moment := _earliest(due.next, due.next_event)) is not None and moment <= to:
            self.now = moment
            due = self.run_due()
        # Nothing falls due after the last moment run and up to `to` (the loop's test), so
        # what is due at `to` is what was left due at that moment.
        self.now = to
        self.due_now = due.now
        if due.now:
            self.run_due()
        return True

    def run_due(self) -> Due:
        """`test_clock.run_due` at now, and the probe after it."""
        test_clock.run_due(test_clock.AdvanceReport(previous=self.now, now=self.now))
        self.on_run()
        return self.probe.at(self.now)


def _earliest(*moments: datetime | None) -> datetime | None:
    return min((moment for moment in moments if moment is not None), default=None)
