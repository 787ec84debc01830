"""The backtest's report as one self-contained HTML page (the simulation's page shell and
styles, no script, no external file), built from the same dict the JSON holds. Everything
from the report is escaped: explanations and customer ids come from stored data."""

import json
from html import escape
from pathlib import Path

from simulation.backtest.outcomes import RANK
from simulation.backtest.report import SIDES, left_out_text
from simulation.html import STYLE

EXTRA_STYLE = """
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.sides>div{background:#f7f7f7;padding:.5em .8em;border-radius:4px}
.sides h4{margin:.1em 0 .3em;font-size:.95em}.sides ul{margin:.3em 0;padding-left:1.2em}
.account{border-top:1px solid #ddd;margin-top:1em;padding-top:.5em}
code{font-size:.95em}
"""


def _text(value: object) -> str:
    """A value from the report as escaped text (dicts and lists as compact JSON)."""
    if value == "":
        return '<span class="muted">(none)</span>'
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:,}"
    return escape(str(value))


def _change_cell(old: int, new: int) -> str:
    delta = new - old
    return f'<td class="n">{delta:+,}</td>' if delta else '<td class="n muted">0</td>'


def _row(label: str, old: int, new: int, css: str = "") -> str:
    return (
        f"<tr{css}><td>{escape(label)}</td><td class=n>{old:,}</td><td class=n>{new:,}</td>"
        f"{_change_cell(old, new)}</tr>"
    )


HEAD = (
    '<table><tr><th></th><th class="n">active</th><th class="n">candidate</th>'
    '<th class="n">change</th></tr>'
)


def totals_table(report: dict) -> str:
    """The totals of both replays side by side; money per currency, in minor units."""
    active, candidate = report["totals"]["active"], report["totals"]["candidate"]
    lines = [HEAD]
    for key in active:
        old, new = active[key], candidate.get(key, 0)
        if isinstance(old, dict):
            lines.append(f"<tr><td>{escape(key.replace('_', ' '))} (minor units)</td></tr>")
            for currency in sorted(set(old) | set(new)):
                lines.append(
                    _row(currency, old.get(currency, 0), new.get(currency, 0), ' class="sub"')
                )
            continue
        lines.append(_row(key.replace("_", " "), old, new))
    lines.append("</table>")
    return "".join(lines)


def rungs_table(report: dict) -> str:
    rungs = report["per_rung"]
    names = sorted(set(rungs["active"]) | set(rungs["candidate"]), key=lambda r: RANK.get(r, -1))
    if not names:
        return '<p class="muted">No account reached a rung on either side.</p>'
    body = "".join(
        _row(name.replace("_", " "), rungs["active"].get(name, 0), rungs["candidate"].get(name, 0))
        for name in names
    )
    return f"{HEAD}{body}</table>"


def retry_answers(report: dict) -> str:
    items = "".join(
        f"<li><b>{side}</b>: from history: {answers.get('history', 0):,}, "
        f"from the class's observed rate: {answers.get('class_rate', 0):,}</li>"
        for side, answers in ((side, report["retry_answers"][side]) for side in SIDES)
    )
    rates = ", ".join(
        f"{escape(cls)} {rate:.0%}" for cls, rate in report.get("class_rates", {}).items()
    )
    return (
        f"<ul>{items}</ul><p class=muted>A retry the history made is answered as it was "
        "answered then; any other retry succeeds at the decline class's observed rate of later "
        f"charges succeeding: {rates or 'none observed'}.</p>"
    )


def changes_by_kind(report: dict) -> str:
    how = report["changed"]["how"]
    if not how:
        return ""
    rows = "".join(
        f"<tr><td>{escape(kind)}</td><td class=n>{count:,}</td></tr>" for kind, count in how.items()
    )
    return f"<table>{rows}</table>"


def explanation(side: str, decided: dict) -> str:
    """One side's last decision for the account: summary, then the rules that fired."""
    if not decided:
        return f'<div><h4>{side}</h4><p class="muted">(no decision)</p></div>'
    rules = "".join(
        f"<li><code>{escape(str(rule.get('rule', '')))}</code>: "
        f"{escape(str(rule.get('conclusion', '')))}</li>"
        for rule in decided.get("explanation") or []
        if isinstance(rule, dict)
    )
    return (
        f"<div><h4>{side}</h4><p>{_text(decided.get('summary', ''))}</p>"
        f'<p class="muted">policy version {_text(decided.get("policy_version", "?"))}, '
        f"decided {_text(decided.get('decided_at', '?'))}</p>"
        f"{f'<ul>{rules}</ul>' if rules else ''}</div>"
    )


def changed_accounts(report: dict) -> str:
    parts = []
    for account in report["accounts"]:
        changes = "".join(
            f"<tr><td>{escape(key.replace('_', ' '))}</td><td class=n>{_text(old)}</td>"
            f"<td class=n>{_text(new)}</td></tr>"
            for key, (old, new) in account["changes"].items()
        )
        sides = "".join(explanation(side, account.get(side) or {}) for side in SIDES)
        parts.append(
            f'<div class="account"><h3><code>{_text(account["customer"])}</code></h3>'
            '<table><tr><th></th><th class="n">active</th><th class="n">candidate</th></tr>'
            f'{changes}</table><div class="sides">{sides}</div></div>'
        )
    return "".join(parts)


def render(report: dict) -> str:
    window, policies, events = report["window"], report["policies"], report["events"]
    title = f"Dunning backtest: {window['since']} .. {window['until']}"
    changed = report["changed"]["accounts"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}{EXTRA_STYLE}</style></head><body>
<h1>{escape(title)}</h1>
<p class="muted">The window's stored Stripe events replayed through the real path twice, each
in a scratch database: once under the active policy, once under the candidate.</p>
<ul><li><b>active</b>: {_text(policies["active"])}</li>
<li><b>candidate</b>: {_text(policies["candidate"])}</li></ul>
<p>Stored events {_text(events["stored"])}: replayed {_text(events["replayed"])}; left out as
caused by the service's own actions {_text(events["left_out_caused_by_the_service"])} (each replay
makes its own). Left out of both replays: {_text(left_out_text(events))}, their outcome
filled in as nothing happened.</p>
<h2>Totals</h2>{totals_table(report)}
<h2>Accounts reaching each rung</h2>
<p class="muted">Accounts whose highest rung was at or above it.</p>{rungs_table(report)}
<h2>How retries were answered</h2>{retry_answers(report)}
<h2>Accounts whose outcome changes: {changed:,}</h2>{changes_by_kind(report)}
{changed_accounts(report)}
</body></html>
"""


def write_html(report: dict, path: str | Path) -> None:
    Path(path).write_text(render(report))
