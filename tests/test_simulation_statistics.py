"""The simulator's scratch database gets planner statistics as it grows
(`simulation.scratch.GrowingStatistics`): a server whose autovacuum is off (this machine's)
would otherwise plan the hot statements for empty tables all run long."""

import pytest
from django.db import connection

from billing_events.models import Account
from simulation.scratch import GrowingStatistics

pytestmark = pytest.mark.django_db


def _planner_rows(table: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        return cursor.fetchone()[0]


def test_analyse_once_the_events_grew_by_a_fifth():
    statistics = GrowingStatistics()
    steps = [(499, 0), (500, 1), (599, 1), (600, 2), (700, 2), (720, 3), (5000, 4)]
    for events, runs in steps:
        statistics.grown_to(events)
        expected = runs if connection.vendor == "postgresql" else 0
        assert (events, statistics.runs) == (events, expected)


def test_the_planner_then_knows_the_tables_sizes():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    Account.objects.bulk_create(Account(stripe_customer_id=f"cus_stats{i}") for i in range(3))
    assert _planner_rows("billing_events_account") != 3  # never analysed (-1), or stale
    GrowingStatistics().grown_to(GrowingStatistics.FIRST)
    assert _planner_rows("billing_events_account") == Account.objects.count() == 3
