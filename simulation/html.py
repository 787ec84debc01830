"""The report as one self-contained HTML page: the table, and charts drawn as inline SVG
(no script, no external file), for a payments lead to read."""

from html import escape
from pathlib import Path

from simulation.ablation import claim_lines, table_rows
from simulation.charts import (
    LEGACY_COLOURS,
    LEGACY_GREY,
    LEVEL_COLOURS,
    SERVICE_BLUE,
    legend,
    nice_max,
    recovery_chart,
    stacked_days_chart,
)
from simulation.report import rows

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #ddd}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.sub td:first-child{padding-left:2em;color:#555}
.better{color:#1a7f37;font-weight:600}.worse{color:#b3261e;font-weight:600}
.muted{color:#666}.charts{display:flex;flex-wrap:wrap;gap:1.5em}
figure{margin:0}figcaption{font-weight:600;margin-bottom:.3em}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-1px}
svg text{font-size:11px;fill:#444}
"""


LOWER_IS_BETTER = {
    "upgrade-only",
    "bad-debt",
    "limbo",
    "retries on",
    "retries while",
    "above notice",
    "network-cap",
    "median days",
    "disagree",
    "lost or stuck",
    "without core",
    "restricted",
    "beyond the upgrade",
}


def _verdict(label: str, legacy: str, service: str) -> str:
    """'better' / 'worse' for rows where a number compares plainly, else ''."""

    def number(text: str) -> float | None:
        head = text.split(" ")[0].replace(",", "").rstrip("%")
        try:
            return float(head)
        except ValueError:
            return None

    old, new = number(legacy), number(service)
    if old is None or new is None or old == new:
        return ""
    if any(key in label for key in LOWER_IS_BETTER):
        return "better" if new < old else "worse"
    if "recovered" in label or "recovery rate" in label or "back within" in label:
        return "better" if new > old else "worse"
    return ""


def comparison_table(report: dict) -> str:
    lines = ['<table><tr><th></th><th class="n">legacy</th><th class="n">this service</th></tr>']
    for label, legacy, service in rows(report):
        css = ' class="sub"' if label.startswith("  ") else ""
        verdict = _verdict(label, legacy, service)
        cell = f'<td class="n {verdict}">' if verdict else '<td class="n">'
        lines.append(
            f"<tr{css}><td>{escape(label.strip())}</td><td class=n>{escape(legacy)}</td>"
            f"{cell}{escape(service)}</td></tr>"
        )
    lines.append("</table>")
    return "".join(lines)


HOW_TO_READ = """
<ul>
<li><b>Same customers on both sides.</b> Every customer's behaviour (when funds arrive, whether
and when they add a card or pay, what finance does) is drawn once from the seed and hidden from
both policies; only the policy differs. The service ran for real: signed webhooks, the engine,
the outbox, the simulated gateway answering retries from that hidden truth, on the test clock.
The legacy side is a model (see <code>simulation/legacy.py</code>).</li>
<li><b>Money</b> counts invoices whose first charge failed; recovered is what was paid by the
end of the run (retry, customer on-session, out of band). The legacy side keeps invoicing the
accounts it leaves in limbo, so its denominator can be larger.</li>
<li><b>Days to recovery</b> are measured on the invoices that were recovered, so a policy that
recovers more of the slow ones shows a longer median; the shares of failed money back within 7 and
14 days compare like with like.</li>
<li><b>Upgrade-only bad debt</b>: accounts put in bad debt while every failed invoice they still
owed was an upgrade/proration invoice (base plan paid). Per year extrapolates this book's rate.
<i>Brought forward</i>: bad debt entered when a base invoice had also failed, but dated from an
older unpaid upgrade invoice (earlier than the base invoice alone would have).</li>
<li><b>Limbo</b>: at the end, money owed after dunning gave up (retries exhausted or invoice
written off), subscription not cancelled, nothing further scheduled.</li>
<li><b>Retries on hard / fraud / authentication-required</b>: off-session attempts made while the
card was, in truth, in that kind of decline (a hard decline's new card ends it).</li>
<li><b>Stores disagree</b>: for the service, every account recomputed after the run
(<code>DRIFT_DETECTED</code>) with a non-empty diff, plus standings not acknowledged or not held
by Account Management; for legacy, a bad-debt flag that does not match what is owed.</li>
<li><b>Lost or stuck</b>: webhook events not processed, deliveries refused, outbox items dead or
overdue, invoices whose mirror status differs from Stripe's; for legacy, escalations and liftings
dropped while Account Management was down.</li>
<li><b>Restricted</b>: account-days (sampled daily) in which customers with six or more paid
months before the run had any restriction; legacy bans outright.</li>
</ul>
"""


def render(report: dict) -> str:
    legacy, service = report["legacy"], report["service"]
    params, outage = report["parameters"], report["account_management_outage"]
    service_series = service["series"]["levels"]
    legacy_series = legacy["series"]
    ymax = nice_max(
        max(
            [sum(values) for values in zip(*service_series.values(), strict=True)]
            + [sum(values) for values in zip(*legacy_series.values(), strict=True)]
            + [0]
        )
    )
    mix_rows = "".join(
        f"<tr><td><code>{escape(key)}</code></td><td class=n>{value:g}</td></tr>"
        for key, value in report["mix"].items()
    )
    title = (
        f"Dunning simulation: {params['accounts']:,} accounts, {params['days']} days, "
        f"seed {params['seed']}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(title)}</h1>
<p class="muted">Legacy policy vs this service on the same book, from {escape(params["start"])};
Account Management down {outage["hours"]:g} h from day {outage["start_day"]:.1f}.
Amounts in USD. Green: the service does better; red: worse.</p>
{comparison_table(report)}
<h2>Days to recovery</h2>
<figure><figcaption>Recovered invoices by days from the first failed charge</figcaption>
<div class="legend"><span><i style="background:{LEGACY_GREY}"></i>legacy</span>
<span><i style="background:{SERVICE_BLUE}"></i>this service</span></div>
{recovery_chart(legacy, service)}</figure>
<h2>Ladder levels over time</h2>
<div class="charts">
<figure><figcaption>This service: open dunning cases by level, each day</figcaption>
{legend(LEVEL_COLOURS)}{stacked_days_chart(service_series, LEVEL_COLOURS, ymax)}</figure>
<figure><figcaption>Legacy: accounts retrying, flagged, or exhausted without a flag</figcaption>
{legend(LEGACY_COLOURS)}{stacked_days_chart(legacy_series, LEGACY_COLOURS, ymax)}</figure>
</div>
<p class="muted">The service restricts premium features first and keeps core access until
suspension; the legacy flag bans outright. Cancelled at the end of the ladder during the run:
{service["cancelled_by_the_ladder"]}.</p>
{ablation_html(report)}
<h2>How to read it</h2>{HOW_TO_READ}
<h2>Behaviour mix</h2>
<p class="muted">Defaults and their sources: <code>manage.py simulate --show-mix</code>.</p>
<table>{mix_rows}</table>
</body></html>
"""


def ablation_html(report: dict) -> str:
    """The ablation table (mean [min-max] across seeds), the claims and the definitions."""
    ablation = report.get("ablation")
    if not ablation:
        return ""
    header, *body = table_rows(ablation["table"])
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    lines = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in body
    )
    legacy = next(iter(ablation["table"]))
    claims = [
        *claim_lines(ablation["claims"]["service_vs_legacy"], "this service", legacy),
        *claim_lines(ablation["claims"]["design_vs_legacy"], "the whole design (modelled)", legacy),
    ]
    seeds = ", ".join(map(str, ablation["seeds"]))
    service_seeds = ", ".join(map(str, ablation["service_seeds"]))
    return (
        "<h2>What each part of the design buys (ablation)</h2>"
        f'<p class="muted">Seeds {escape(seeds)}: mean [min-max]. Every row but the last is '
        "the policy model with one part switched off; the last is the real service on seed(s) "
        f"{escape(service_seeds)}.</p><table><tr>{head}</tr>{lines}</table>"
        "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in claims) + "</ul>"
        "<h3>Definitions (the same code counts them for every row)</h3><ul>"
        + "".join(
            f"<li><b>{escape(key)}</b>: {escape(text)}</li>"
            for key, text in ablation["definitions"].items()
        )
        + "</ul>"
    )


def write_html(report: dict, path: str | Path) -> None:
    Path(path).write_text(render(report))
