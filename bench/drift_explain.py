"""The drift bench's EXPLAIN ANALYZE of what a scan runs, and the sequential scans of
tables that grow. Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench.drift_book import NOW, SCAN_EVERY
from bench.drift_measure import drift_accounts
from dunning import drift
from dunning.models import DriftScan
from dunning.policy import current_policy
from dunning.snapshot_batch import read_snapshots


def plan_nodes(node: dict, out: list[dict]) -> list[dict]:
    if "Relation Name" in node or "Index Name" in node:
        out.append(
            {
                "node": node["Node Type"],
                "table": node.get("Relation Name", ""),
                "index": node.get("Index Name", ""),
                "rows": round(node.get("Actual Rows", 0) * node.get("Actual Loops", 1)),
                "read": round(
                    (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
                    * node.get("Actual Loops", 1)
                ),
            }
        )
    for child in node.get("Plans", ()):
        plan_nodes(child, out)
    return out


def explain(statements: list[str]) -> list[dict]:
    plans = []
    with connection.cursor() as cursor:
        for statement in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement)
            [plan] = cursor.fetchone()[0]
            plans.append(
                {
                    "sql": " ".join(statement.split()),
                    "ms": plan["Execution Time"],
                    "nodes": plan_nodes(plan["Plan"], []),
                }
            )
    return plans


def explained() -> dict:
    """EXPLAIN ANALYZE what candidates() runs, what the scan runs for one batch (the
    snapshots of drift.BATCH candidates, the guards of the drifted accounts) and its
    watermark query."""
    with CaptureQueriesContext(connection) as captured:
        candidates = drift.candidates(since=NOW - SCAN_EVERY)
    found = {"candidates": explain([q["sql"] for q in captured.captured_queries])}
    batch = sorted(candidates)[: drift.BATCH]
    with CaptureQueriesContext(connection) as captured:
        read_snapshots(batch, now=NOW, policy=current_policy())
    found[f"one batch ({len(batch)} accounts)"] = explain(
        [q["sql"] for q in captured.captured_queries]
    )
    drifting = drift_accounts()[0]
    with CaptureQueriesContext(connection) as captured:
        drift.guards(drifting, now=NOW)
    found[f"guards ({len(drifting)} accounts)"] = explain(
        [q["sql"] for q in captured.captured_queries]
    )
    with CaptureQueriesContext(connection) as captured:
        DriftScan.objects.order_by("-started_at").values_list("started_at", flat=True).first()
    found["watermark"] = explain([q["sql"] for q in captured.captured_queries])
    return found


def print_plans(plans: dict, big_tables: set[str]) -> list[str]:
    """One line per statement; returns the sequential scans of tables that grow with the
    book (or with history)."""
    flagged = []
    for group, rows in plans.items():
        print(f"\n  {group}:")
        for row in rows:
            nodes = ", ".join(
                dict.fromkeys(
                    f"{n['node']} {n['index'] or n['table']}"
                    + (f" on {n['table']}" if n["index"] and n["table"] else "")
                    + (
                        f" (read {n['read']:,}, kept {n['rows']:,})"
                        if n["read"] != n["rows"]
                        else ""
                    )
                    + (f" ({n['rows']:,} rows)" if n["read"] == n["rows"] else "")
                    for n in row["nodes"]
                )
            )
            print(f"    {row['ms']:8.2f} ms  {row['sql'][:70]}...\n               {nodes}")
            for n in row["nodes"]:
                if n["node"] == "Seq Scan" and n["table"] in big_tables:
                    flagged.append(
                        f"{group}: Seq Scan on {n['table']} read {n['read']:,} rows, kept "
                        f"{n['rows']:,} ({row['ms']:.1f} ms)"
                    )
    return flagged
