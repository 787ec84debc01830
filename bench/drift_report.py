"""The drift bench's report: the rounds' medians per book, the ratios big / small, the
table, the verdict against issue #16's goal (and the floor, said separately), the EXPLAIN
summary, and bench/results/drift.json. Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import django
from django.db import connection

from bench.common import median
from bench.drift_book import (
    FLOOR_S,
    GOAL_ACCOUNTS,
    GOAL_S,
    GROWTH_LIMIT,
    NOW,
    QUIET_CORES,
    RESULTS,
)
from bench.drift_explain import print_plans
from billing_events.models import Account, Invoice, PaymentAttempt, WebhookEvent
from dunning.models import AccountStanding, DriftScan, DunningCase


def print_verdict(big: dict, growth: dict) -> dict:
    """Issue #16's goal and floor for the big book's scan, each said separately, and
    whether its cost follows the accounts in dunning. A book smaller than the goal's is
    judged on a projection: its cost per candidate (remediations included: the drift is a
    share of the accounts in dunning) times the goal book's candidates at the same shares."""
    scan_s, others = big["scan_s"], big["scan_others_cores"]
    judged, how = scan_s, "measured"
    if big["accounts"] != GOAL_ACCOUNTS:
        share = big["candidates"] / big["accounts"]
        judged = scan_s / big["candidates"] * round(GOAL_ACCOUNTS * share)
        how = (
            f"projected to {GOAL_ACCOUNTS:,} accounts ({round(GOAL_ACCOUNTS * share):,} "
            f"candidates at {big['scan_ms_per_candidate']:.2f} ms): {judged:.1f} s"
        )
    verdict = {
        "scan_s": round(scan_s, 2),
        "judged_s": round(judged, 2),
        "judged_on": how,
        "goal_s": GOAL_S,
        "goal_met": judged < GOAL_S,
        "floor_s": FLOOR_S,
        "floor_met": judged < FLOOR_S,
        "quiet_machine": others < QUIET_CORES,
        "big_over_small": round(growth["scan"], 3),
        "follows_dunning": growth["scan"] <= GROWTH_LIMIT,
    }
    said = {True: "MET", False: "NOT MET"}
    by_round = ", ".join(f"{x:.1f}" for x in big["scan_s_by_round"])
    print(
        f"\nVERDICT: the {big['accounts']:,}-account scan takes {scan_s:.1f} s (median; rounds "
        f"{by_round}; CPU {big['scan_cpu_s']:.1f} s), {big['scan_ms_per_candidate']:.2f} ms per "
        f"candidate; during it the load average was {big['scan_load']:.2f} and other "
        f"processes used {others:.2f} of {os.cpu_count()} cores"
    )
    quiet = "" if verdict["quiet_machine"] else " (measured on a machine that was NOT quiet)"
    print(f"  judged on: {how}{quiet}")
    print(f"  goal:  under {GOAL_S:.0f} s on a quiet machine: {said[verdict['goal_met']]}")
    print(f"  floor: under {FLOOR_S:.0f} s: {said[verdict['floor_met']]}")
    print(
        f"  cost follows the accounts in dunning (big / small book {growth['scan']:.2f}x, at "
        f"most {GROWTH_LIMIT}x): {said[verdict['follows_dunning']]}"
    )
    return verdict


def report(run: dict) -> None:
    """Print and write what the measured rounds found; `run` carries main()'s state."""
    args, rounds, expect, order = run["args"], run["rounds"], run["expect"], run["order"]
    in_dunning, changed, plans = run["in_dunning"], run["changed"], run["plans"]
    book_sizes, timings, measured_s = run["book_sizes"], run["timings"], run["measured_s"]
    DB_BIG, DB_SMALL = run["databases"]
    run_started = run["started"]

    def of_rounds(name: str, key: str) -> float:
        return median([r[key] for r in rounds[name]])

    rows = {}
    for name in order:
        accounts = expect[name]["accounts"]
        first = rounds[name][0]
        rows[name] = {
            "accounts": accounts,
            "in_dunning": in_dunning,
            "changed": changed,
            **{
                k: first[k]
                for k in (
                    "candidates",
                    "drifted",
                    "deferred",
                    "remediated",
                    "candidates_with_changed",
                    "missed_changed",
                )
            },
            **{
                k: of_rounds(name, k)
                for k in (
                    "scan_s",
                    "scan_cpu_s",
                    "scan_load",
                    "scan_others_cores",
                    "candidates_s",
                    "full_pass_s",
                    "full_pass_cpu_s",
                    "check_one_s",
                    "check_one_cpu_s",
                )
            },
            "scan_s_by_round": [round(r["scan_s"], 2) for r in rounds[name]],
            "scan_load_max": max(r["scan_load_max"] for r in rounds[name]),
        }
        row = rows[name]
        row["scan_ms_per_candidate"] = row["scan_s"] / row["candidates"] * 1000
        row["scan_over_full_pass"] = row["scan_s"] / row["full_pass_s"]
        row["naive_detector_s_estimate"] = row["check_one_s"] * accounts
        row["scan_over_naive_detector"] = row["scan_s"] / row["naive_detector_s_estimate"]
        # What the scan would cost examining the changed accounts too (each one as much
        # as checking an account not in dunning).
        missed = row["candidates_with_changed"] - row["candidates"]
        row["scan_with_changed_s_estimate"] = row["scan_s"] + missed * row["check_one_s"]
    s, b = rows[DB_SMALL], rows[DB_BIG]
    growth = {
        "accounts": b["accounts"] / s["accounts"],
        "scan": b["scan_s"] / s["scan_s"],
        "scan_by_round": [
            round(x["scan_s"] / y["scan_s"], 3)
            for x, y in zip(rounds[DB_BIG], rounds[DB_SMALL], strict=True)
        ],
        "scan_cpu": b["scan_cpu_s"] / s["scan_cpu_s"],
        "candidates": b["candidates_s"] / s["candidates_s"],
        "full_pass": b["full_pass_s"] / s["full_pass_s"],
        "check_one": b["check_one_s"] / s["check_one_s"],
    }

    every_round = [r for name in order for r in rounds[name]]
    loads = {
        "mean": statistics.fmean(r["scan_load"] for r in every_round),
        "max": max(r["scan_load_max"] for r in every_round),
        "others_cores": statistics.fmean(r["scan_others_cores"] for r in every_round),
    }
    print(
        f"\nPostgreSQL {connection.pg_version // 10000}, NOW = {NOW:%Y-%m-%d %H:%M} UTC, "
        f"{args.rounds} rounds, {measured_s:.0f} s measured, {os.cpu_count()} CPUs; during "
        f"the scans: load average {loads['mean']:.2f} (max {loads['max']:.2f}), other "
        f"processes {loads['others_cores']:.2f} cores\n"
    )
    header = (
        f"{'book':<9}{'accounts':>10}{'dunning':>9}{'changed':>8}{'cand.':>8}{'drifted':>8}"
        f"{'deferred':>9}{'remed.':>7}{'scan s':>8}{'ms/cand':>8}{'cand() ms':>10}"
        f"{'pass s':>8}{'scan/pass':>10}{'naive s*':>9}{'scan/naive':>11}"
    )
    print(header)
    for name in order:
        r = rows[name]
        label = "big" if name == DB_BIG else "small"
        print(
            f"{label:<9}{r['accounts']:>10,}{r['in_dunning']:>9,}{r['changed']:>8,}"
            f"{r['candidates']:>8,}{r['drifted']:>8,}{r['deferred']:>9,}{r['remediated']:>7,}"
            f"{r['scan_s']:>8.1f}{r['scan_ms_per_candidate']:>8.2f}"
            f"{r['candidates_s'] * 1000:>10.0f}{r['full_pass_s']:>8.2f}"
            f"{r['scan_over_full_pass']:>9.1f}x{r['naive_detector_s_estimate']:>9.0f}"
            f"{r['scan_over_naive_detector']:>10.3f}x"
        )
    print(
        "  scan s: dunning.drift.scan() wall time, median of the rounds; pass s: the baseline,\n"
        "  every account id in chunks of 10,000; naive s*: drifted() on 1,000 accounts not\n"
        "  in dunning, times the accounts (an estimate of checking every account)"
    )
    print(
        f"\nbig / small book ({growth['accounts']:.0f}x the accounts, the same in dunning): "
        f"scan {growth['scan']:.2f}x (by round "
        + ", ".join(f"{x:.2f}" for x in growth["scan_by_round"])
        + f"; CPU {growth['scan_cpu']:.2f}x), candidates() {growth['candidates']:.2f}x, "
        f"per-candidate check {growth['check_one']:.2f}x, full pass {growth['full_pass']:.2f}x"
    )
    verdict = print_verdict(b, growth)

    if any(rows[name]["missed_changed"] for name in order):
        r = rows[DB_BIG]
        print(
            f"\nAPP PROBLEM: scan() examined {r['candidates']:,} accounts; candidates() with the "
            f"previous scan's start as `since` gives {r['candidates_with_changed']:,}: the "
            f"{r['changed']:,} accounts changed since the previous scan were left out. scan() "
            "evaluates its watermark query after creating its own DriftScan row, so `since` is "
            "its own start. With them the scan would take about "
            f"{r['scan_with_changed_s_estimate']:.1f} s on the big book (estimate)."
        )

    big_tables = {
        m._meta.db_table
        for m in (Account, Invoice, PaymentAttempt, WebhookEvent, DunningCase, AccountStanding)
    } | {DriftScan._meta.db_table}
    print("\nEXPLAIN ANALYZE on the big book (scan nodes, rows they returned):")
    flagged = print_plans(plans, big_tables)
    if flagged:
        print("\nsequential scans of tables that grow with the book or with time:")
        for line in flagged:
            print(f"  {line}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "drift",
        "databases": {"big": DB_BIG, "small": DB_SMALL},
        "postgres_version": connection.pg_version,
        "now": NOW.isoformat(),
        "accounts": args.accounts,
        "in_dunning_share": args.in_dunning,
        "rounds": args.rounds,
        "books": book_sizes,
        "results": rows,
        "big_over_small": growth,
        "explain": plans,
        "sequential_scans": flagged,
        "build_seconds": timings,
        "reused_books": not timings,
        "measured_seconds": round(measured_s, 2),
        "total_seconds": round(time.perf_counter() - run_started, 2),
        "verdict": verdict,
        "load_during_scans": loads,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
    }
    (RESULTS / "drift.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS / 'drift.json'} ({report['total_seconds']:.0f} s in all)")
