"""The benches' CPU accounting: a PostgreSQL backend that begins and ends between two
looks at /proc is in no listing of the postmaster's children; its CPU still counts for the
database it served (#16: backends that exit mid-phase)."""

import os
import time

import psycopg
import pytest
from django.db import connection

from bench import processes

pytestmark = pytest.mark.django_db


def a_short_session_on(dsn: str) -> int:
    """Its backend's pid, once the backend has exited."""
    with psycopg.connect(dsn) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
        time.sleep(0.1)
    raise AssertionError("the backend did not exit")


def test_a_backend_that_began_and_ended_between_two_looks_counts_for_its_database():
    params = connection.get_connection_params()
    dsn = f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"
    postmaster, _ = processes.stack_pids(dsn, "redis://127.0.0.1:6379/0")
    if postmaster is None:
        pytest.skip("PostgreSQL's processes are not visible in this /proc")
    first = processes.StackSample.take(postmaster, postmaster, None)

    a_short_session_on(dsn)
    last = None
    for _ in range(30):
        last = processes.StackSample.take(postmaster, postmaster, None)
        if last.sessions.get(params["dbname"], 0) > first.sessions.get(params["dbname"], 0):
            break
        time.sleep(0.1)

    ours = processes.postgres_cpu(
        first.postgres, last.postgres, params["dbname"], sessions=(first, last)
    )
    blind = processes.postgres_cpu(first.postgres, last.postgres, params["dbname"])
    assert ours["exited"] > 0.05  # the generate_series session, gone before the second look
    assert blind["exited"] == 0 and blind["other_databases"] >= ours["exited"]
