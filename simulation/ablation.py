"""The ablation table: the same book under the legacy baseline, the whole design, and the
design with one part switched off at a time, on several seeds, each figure with its spread.

Every row here is the pure-Python model (`model`), so rows differ by the switched part
alone and a seed costs about a second per thousand accounts; the real service's run on
the same books is set beside them (`service_rows`) as the check that the model is fair
to it.
"""

import statistics
from dataclasses import replace

from simulation.book import Book
from simulation.legacy import legacy_design
from simulation.model import Design, model_report, run_model

FULL = Design("the whole design (modelled)")
SERVICE_ROW = "this service (real engine)"
VARIANTS = (
    ("decline classes off: one cadence for all", {"classes": False}),
    ("ladder off: a binary flag at exhaustion", {"ladder": False}),
    ("upgrade rule off", {"upgrade_rule": False}),
    ("outbox off: Account Management synchronous", {"outbox": False}),
)

# (key, label, which way is better)
METRICS = (
    ("recovery_rate", "recovery", "higher"),
    ("recovered_within_14_days", "back within 14 d", "higher"),
    ("upgrade_only_bad_debt", "upgrade-only bad debt", "lower"),
    ("limbo", "limbo", "lower"),
    ("retries_on_hard", "retries on hard declines", "lower"),
    ("core_access_days_lost", "core-access account-days lost", "lower"),
    ("lost_or_stuck_total", "AM updates lost in outage", "lower"),
)


def designs(legacy_retry_days: tuple[float, ...] | None = None) -> list[Design]:
    rows = [legacy_design(legacy_retry_days), FULL]
    rows += [replace(FULL, name=name, **switch) for name, switch in VARIANTS]
    return rows


def figures(report: dict) -> dict[str, float]:
    return {key: report.get(key) or 0 for key, _, _ in METRICS}


def ablate(book: Book, legacy_retry_days: tuple[float, ...] | None = None) -> dict:
    """Every design's figures on one book: design name -> metric -> value."""
    return {
        design.name: figures(model_report(book, run_model(book, design)))
        for design in designs(legacy_retry_days)
    }


def spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "min": min(values),
        "max": max(values),
        "per_seed": values,
    }


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict:
    """name -> metric -> {mean, min, max, per_seed}, in the order the rows came."""
    names = list(per_seed[0])
    return {
        name: {key: spread([seed[name][key] for seed in per_seed]) for key, _, _ in METRICS}
        for name in names
    }


def beats(ours: list[float], theirs: list[float], better: str) -> list[bool]:
    if better == "higher":
        return [a > b for a, b in zip(ours, theirs, strict=True)]
    return [a < b for a, b in zip(ours, theirs, strict=True)]


def claims(table: dict, ours: str, theirs: str) -> list[dict]:
    """For each metric, on how many seeds `ours` is strictly better than `theirs`."""
    found = []
    for key, label, better in METRICS:
        a, b = table[ours][key]["per_seed"], table[theirs][key]["per_seed"]
        wins = beats(a, b, better)
        ties = sum(x == y for x, y in zip(a, b, strict=True))
        found.append(
            {
                "metric": key,
                "label": label,
                "better": better,
                "seeds": len(wins),
                "wins": sum(wins),
                "ties": ties,
                "holds_on_every_seed": all(wins),
            }
        )
    return found


def claim_lines(claims_found: list[dict], ours: str, theirs: str) -> list[str]:
    lines = []
    for claim in claims_found:
        n, wins = claim["seeds"], claim["wins"]
        if claim["holds_on_every_seed"]:
            verdict = f"better on every seed ({n}/{n})"
        elif wins == 0 and claim["ties"] == n:
            verdict = f"the same on every seed ({n}/{n}): no claim"
        else:
            verdict = f"NOT better on every seed: better on {wins}/{n}, tied on {claim['ties']}"
        lines.append(f"{ours} vs {theirs}, {claim['label']}: {verdict}")
    return lines


def _fmt(key: str, value: float) -> str:
    if key in ("recovery_rate", "recovered_within_14_days"):
        return f"{value * 100:.1f}%"
    return f"{value:,.1f}" if value != int(value) else f"{int(value):,}"


def cell(key: str, figure: dict) -> str:
    """The mean, and the range across seeds when there are several."""
    if len(figure["per_seed"]) == 1:
        return _fmt(key, figure["mean"])
    return f"{_fmt(key, figure['mean'])} [{_fmt(key, figure['min'])}-{_fmt(key, figure['max'])}]"


def table_rows(table: dict) -> list[list[str]]:
    """Header, then one row per design: name and a cell per metric."""
    header = ["", *(label for _, label, _ in METRICS)]
    return [header] + [
        [name, *(cell(key, row[key]) for key, _, _ in METRICS)] for name, row in table.items()
    ]


def format_ablation(table: dict) -> str:
    rows = table_rows(table)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        pairs = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in pairs]
        lines.append("  ".join(cells))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
