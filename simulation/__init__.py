"""The simulator: a book of subscription accounts through the real service, against a model
of the legacy policy on the same customers, and the outcome report.

    book         the book's types: each customer's truth, charges, card spells
    generator    the book and each customer's hidden truth, from one Random(seed)
    mix          the behaviour rates and their defaults (documented there, with sources)
    model        the policy model (legacy, and the design with one part switched off)
    legacy       the legacy policy on the model, made fair
    ablation     the same books through the model's variants, spread across seeds
    fair         limbo and bad debt, one definition for both sides
    service      the service configured for a run, and `run_service`
    driver       the run through the service: the hidden truth, deliveries, the clock
    clock_walk   the test clock walked in memory (one process per scratch database)
    due          one statement: is anything due now, and when next
    stripe_side  Stripe's events and its answers to the service's calls
    service_run  what a run saw besides the database, and its daily samples
    ledger       Stripe's side of each world, measured the same way for both
    facts        what a run leaves to measure, read from its stores; merged across shards
    measure      the service's figures, from the (merged) facts
    shard, tasks `--workers N`: shards of the book on Celery workers, one scratch database
                 each (`scratch`), merged into the single-process report
    report       the side-by-side report (dict, table, JSON)
    html, charts the HTML page with inline SVG charts

A tool over the service: it uses the product apps through their public modules, and no
product app imports it. `simulate()` runs it all in the current database (which must be
empty).
"""

from collections.abc import Callable

from simulation.mix import Mix, parse_mix


def simulate(
    *,
    accounts: int,
    days: int,
    seed: int,
    mix: Mix | None = None,
    progress: Callable[[str], None] | None = None,
    seeds: int = 1,
    service_seeds: int = 1,
    legacy_retry_days: tuple[float, ...] | None = None,
    reset: Callable[[], None] | None = None,
    workers: int = 0,
) -> dict:
    """Generate the book, run legacy and service on it, return the report. With `seeds`
    above 1 the ablation runs on seeds seed..seed+seeds-1 and the real service on the first
    `service_seeds` of them; `reset` empties the database between service runs. With
    `workers`, the service's runs are sharded over that many Celery shards (`shard`), and
    this process's database is not used."""
    from simulation import ablation
    from simulation.facts import collect, merge
    from simulation.fair import DEFINITIONS
    from simulation.generator import generate
    from simulation.legacy import legacy_report, run_legacy
    from simulation.measure import service_report
    from simulation.report import build_report
    from simulation.service import run_service
    from simulation.shard import run_sharded

    seed_list = [seed + n for n in range(max(1, seeds))]
    service_seeds = max(1, min(service_seeds, len(seed_list)))
    report: dict = {}
    per_seed: list[dict] = []
    service_rows: list[dict] = []
    seconds: dict = {"simulate": 0.0, "converge": 0.0}
    for number, this_seed in enumerate(seed_list):
        book = generate(accounts=accounts, days=days, seed=this_seed, mix=mix)
        per_seed.append(ablation.ablate(book, legacy_retry_days))
        if number >= service_seeds:
            continue
        if number and reset is not None and not workers:
            reset()
        if progress and len(seed_list) > 1:
            progress(f"seed {this_seed}: the service")
        legacy = legacy_report(book, run_legacy(book, legacy_retry_days))
        if workers:
            facts, run_seconds = run_sharded(book, workers, progress=progress)
        else:
            run = run_service(book, progress=progress)
            # The same path as a sharded run's: one shard's facts, merged.
            facts, run_seconds = merge([collect(book, run)]), run.seconds
        service = service_report(book, facts)
        service_rows.append(ablation.figures(service))
        for key in ("simulate", "converge"):
            seconds[key] += run_seconds[key]
        if "shards" in run_seconds:  # each shard's own: database, run, convergence
            seconds.setdefault("shards", []).extend(run_seconds["shards"])
        if number == 0:
            report = build_report(book, legacy, service)
    table = ablation.summarise(per_seed)
    legacy_name = next(iter(table))
    real = ablation.SERVICE_ROW
    table[real] = ablation.summarise([{real: row} for row in service_rows])[real]
    shared = {name: table[name] for name in (real, legacy_name)}
    shared[legacy_name] = {
        key: ablation.spread(figure["per_seed"][: len(service_rows)])
        for key, figure in table[legacy_name].items()
    }
    report["ablation"] = {
        "seeds": seed_list,
        "service_seeds": seed_list[: len(service_rows)],
        "table": table,
        "claims": {
            "service_vs_legacy": ablation.claims(shared, real, legacy_name),
            "design_vs_legacy": ablation.claims(table, ablation.FULL.name, legacy_name),
        },
        "definitions": DEFINITIONS,
    }
    report["_seconds"] = seconds  # wall clock: removed before writing JSON
    return report


__all__ = ["Mix", "parse_mix", "simulate"]
