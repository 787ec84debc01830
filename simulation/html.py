"""The report as one self-contained HTML page: the table, and charts drawn as inline SVG
(no script, no external file), for a payments lead to read."""

from html import escape
from pathlib import Path

from simulation.ablation import claim_lines, table_rows
from simulation.report import rows

LEVEL_COLOURS = {
    "notice": "#c6dbef",
    "upgrade_restricted": "#6baed6",
    "premium_restricted": "#fdae6b",
    "read_only": "#e6550d",
    "suspended": "#a50f15",
}
LEGACY_COLOURS = {
    "retrying": "#c6dbef",
    "bad_debt": "#a50f15",
}
LEGACY_GREY, SERVICE_BLUE = "#969696", "#2171b5"
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 240, 48, 36, 12

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


def _svg_open(width: int = WIDTH, height: int = HEIGHT, label: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 5:
            return step * 5 if value > step * 4 else step * 4 if value > step * 3 else step * 3
    return value


def _axes(ymax: float, height: int, width: int) -> list[str]:
    bottom = height - PAD_BOTTOM
    parts = [
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}" stroke="#999"/>',
        f'<line x1="{PAD_LEFT}" y1="{bottom}" x2="{width - 8}" y2="{bottom}" stroke="#999"/>',
    ]
    for tick in range(5):
        value = ymax * tick / 4
        y = bottom - (bottom - PAD_TOP) * tick / 4
        parts.append(
            f'<line x1="{PAD_LEFT - 3}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" '
            f'stroke="#eee"/><text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:g}</text>'
        )
    return parts


def recovery_chart(legacy: dict, service: dict) -> str:
    """Grouped bars: recovered invoices per days-to-recovery bucket, legacy vs service."""
    buckets = [label for label, _ in legacy["days_to_recovery_histogram"]]
    values = [
        (old, new)
        for (_, old), (_, new) in zip(
            legacy["days_to_recovery_histogram"], service["days_to_recovery_histogram"], strict=True
        )
    ]
    ymax = _nice_max(max((max(pair) for pair in values), default=0))
    bottom, plot = HEIGHT - PAD_BOTTOM, HEIGHT - PAD_BOTTOM - PAD_TOP
    group = (WIDTH - PAD_LEFT - 16) / max(len(buckets), 1)
    bar = group * 0.36
    parts = [_svg_open(label="days to recovery"), *_axes(ymax, HEIGHT, WIDTH)]
    for index, (bucket, (old, new)) in enumerate(zip(buckets, values, strict=True)):
        x = PAD_LEFT + 8 + index * group
        for offset, (count, colour, who) in enumerate(
            ((old, LEGACY_GREY, "legacy"), (new, SERVICE_BLUE, "this service"))
        ):
            h = plot * count / ymax
            parts.append(
                f'<rect x="{x + offset * bar:.1f}" y="{bottom - h:.1f}" width="{bar - 1:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{who}, {bucket} days: {count}'
                "</title></rect>"
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{bottom + 14}" text-anchor="middle">{bucket}</text>'
        )
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
        "days from the first failed charge to the money</text></svg>"
    )
    return "".join(parts)


def stacked_days_chart(series: dict[str, list[int]], colours: dict[str, str], ymax: float) -> str:
    """Stacked bars, one per day: accounts in each state."""
    days = len(next(iter(series.values()), []))
    bottom, plot = HEIGHT - PAD_BOTTOM, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - PAD_LEFT - 16) / max(days, 1)
    parts = [_svg_open(label="accounts by state per day"), *_axes(ymax, HEIGHT, WIDTH)]
    for day in range(days):
        x, height_so_far = PAD_LEFT + 4 + day * step, 0.0
        for name, colour in colours.items():
            count = series.get(name, [0] * days)[day]
            if not count:
                continue
            h = plot * count / ymax
            parts.append(
                f'<rect x="{x:.1f}" y="{bottom - height_so_far - h:.1f}" '
                f'width="{max(step - 0.6, 0.6):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>day {day + 1}, {name}: {count}</title></rect>"
            )
            height_so_far += h
    for day in range(0, days + 1, max(days // 6, 1)):
        x = PAD_LEFT + 4 + day * step
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{day}</text>')
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">day of the run</text>'
        "</svg>"
    )
    return "".join(parts)


def _legend(colours: dict[str, str]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{colour}"></i>{escape(name.replace("_", " "))}</span>'
            for name, colour in colours.items()
        )
        + "</div>"
    )


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
    ymax = _nice_max(
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
{_legend(LEVEL_COLOURS)}{stacked_days_chart(service_series, LEVEL_COLOURS, ymax)}</figure>
<figure><figcaption>Legacy: accounts retrying, flagged, or exhausted without a flag</figcaption>
{_legend(LEGACY_COLOURS)}{stacked_days_chart(legacy_series, LEGACY_COLOURS, ymax)}</figure>
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
