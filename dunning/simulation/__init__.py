"""The simulator: a book of subscription accounts through the real service, against a model
of the legacy policy on the same customers, and the outcome report.

    generator  the book and each customer's hidden truth, from one Random(seed)
    mix        the behaviour rates and their defaults (documented there, with sources)
    legacy     the legacy policy as a pure-Python baseline
    driver     the run through the service: signed webhooks, engine, outbox, gateway, clock
    ledger     Stripe's side of each world, measured the same way for both
    measure    the service's figures, read from its stores after convergence
    report     the side-by-side report (dict, table, JSON)
    html       the HTML page with inline SVG charts

`simulate()` runs it all in the current database (which must be empty).
"""

from collections.abc import Callable

from dunning.simulation.mix import Mix, parse_mix


def simulate(
    *,
    accounts: int,
    days: int,
    seed: int,
    mix: Mix | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Generate the book, run legacy and service on it, return the report."""
    from dunning.simulation.driver import run_service
    from dunning.simulation.generator import generate
    from dunning.simulation.legacy import legacy_report, run_legacy
    from dunning.simulation.measure import service_report
    from dunning.simulation.report import build_report

    book = generate(accounts=accounts, days=days, seed=seed, mix=mix)
    legacy = legacy_report(book, run_legacy(book))
    run = run_service(book, progress=progress)
    report = build_report(book, legacy, service_report(book, run))
    report["_seconds"] = dict(run.seconds)  # wall clock: removed before writing JSON
    return report


__all__ = ["Mix", "parse_mix", "simulate"]
