"""The backtest's report: the two replays' totals and rungs side by side, how many retries
each answered from history and from the class's rate, and every account whose outcome
changed, with both last explanations."""

import json
from collections import Counter

from simulation.backtest.history import History
from simulation.backtest.outcomes import RANK, AccountOutcome, changes
from simulation.backtest.replay import Replay

SIDES = ("active", "candidate")


def totals(outcomes: dict[str, AccountOutcome]) -> dict:
    recovered: Counter = Counter()
    for outcome in outcomes.values():
        recovered.update(outcome.recovered)
    values = list(outcomes.values())
    return {
        "accounts": len(values),
        "recovered": dict(sorted(recovered.items())),
        "accounts_recovered": sum(bool(o.recovered) for o in values),
        "written_off": sum(o.written_off for o in values),
        "bad_debt": sum(o.bad_debt for o in values),
        "cancelled": sum(o.cancelled for o in values),
        "still_open": sum(bool(o.open_level) for o in values),
        "days_restricted": sum(o.days_restricted for o in values),
        "days_without_core": sum(o.days_without_core for o in values),
        "retries": sum(o.retries for o in values),
        "retries_succeeded": sum(o.retries_succeeded for o in values),
    }


def per_rung(outcomes: dict[str, AccountOutcome]) -> dict[str, int]:
    """Accounts whose highest rung reached was at or above each rung, for every rung up to
    the highest any account reached (a rung no account stopped at still counts those above)."""
    highest = [RANK[o.highest_rung] for o in outcomes.values() if RANK.get(o.highest_rung, 0) > 0]
    if not highest:
        return {}
    return {
        rung: sum(h >= rank for h in highest)
        for rung, rank in RANK.items()
        if 0 < rank <= max(highest)
    }


def build(history: History, runs: dict[str, Replay], *, window: dict, policies: dict) -> dict:
    active, candidate = runs["active"].outcomes, runs["candidate"].outcomes
    changed, how = [], Counter()
    for customer in sorted(set(active) | set(candidate)):
        before = active.get(customer) or AccountOutcome(customer)
        after = candidate.get(customer) or AccountOutcome(customer)
        diff = changes(before, after)
        if not diff:
            continue
        for key, (old, new) in diff.items():
            how[f"{key}: {_direction(old, new)}"] += 1
        changed.append(
            {
                "customer": customer,
                "changes": {key: list(pair) for key, pair in diff.items()},
                "active": before.explanation,
                "candidate": after.explanation,
            }
        )
    return {
        "window": window,
        "policies": policies,
        "events": {
            "stored": history.events,
            "replayed": len(history.replayed),
            "left_out_caused_by_the_service": history.caused_by_service,
            "left_out_no_policy_can_change": {
                "accounts": len(history.independent_accounts),
                "events": history.independent_events,
            },
        },
        "retry_answers": {side: dict(sorted(runs[side].answers.items())) for side in SIDES},
        "class_rates": {cls: round(rate, 4) for cls, rate in history.retry_rate.items()},
        "totals": {side: totals(runs[side].outcomes) for side in SIDES},
        "per_rung": {side: per_rung(runs[side].outcomes) for side in SIDES},
        "changed": {"accounts": len(changed), "how": dict(sorted(how.items()))},
        "accounts": changed,
        "replays": {
            side: {
                "events_posted": runs[side].events_posted,
                "answers_by_status": {str(k): v for k, v in sorted(runs[side].statuses.items())},
            }
            for side in SIDES
        },
    }


def _direction(old: object, new: object) -> str:
    if isinstance(old, bool):
        return "became true" if new else "became false"
    if isinstance(old, int) and isinstance(new, int):
        return "more" if new > old else "fewer"
    if isinstance(old, dict) and isinstance(new, dict):
        return "more" if sum(new.values()) > sum(old.values()) else "less"
    if isinstance(old, str) and isinstance(new, str) and (old in RANK or new in RANK):
        return "higher" if RANK.get(new, -1) > RANK.get(old, -1) else "lower"
    return "different"


def format_table(report: dict) -> str:
    lines = [
        f"Backtest {report['window']['since']} .. {report['window']['until']}",
        f"  active:    {report['policies']['active']}",
        f"  candidate: {report['policies']['candidate']}",
        "",
        f"stored events {report['events']['stored']}: replayed "
        f"{report['events']['replayed']}, left out as caused by the service's own actions "
        f"{report['events']['left_out_caused_by_the_service']} (each replay makes its own)",
        f"left out of both replays: {left_out_text(report['events'])}",
    ]
    for side in SIDES:
        answers = report["retry_answers"][side]
        lines.append(
            f"{side}: retries answered from history: {answers.get('history', 0)}, "
            f"from the class's observed rate: {answers.get('class_rate', 0)}"
        )
    rates = ", ".join(f"{cls} {rate:.0%}" for cls, rate in report["class_rates"].items())
    lines += [f"observed rate of later charges succeeding: {rates or 'none'}", ""]
    lines.append(f"{'':<22}{'active':>14}{'candidate':>14}{'change':>10}")
    active, candidate = report["totals"]["active"], report["totals"]["candidate"]
    for key in active:
        old, new = active[key], candidate[key]
        if isinstance(old, dict):
            for currency in sorted(set(old) | set(new)):
                a, b = old.get(currency, 0), new.get(currency, 0)
                lines.append(f"{key + ' ' + currency:<22}{a:>14,}{b:>14,}{b - a:>+10,}")
            continue
        lines.append(f"{key:<22}{old:>14,}{new:>14,}{new - old:>+10,}")
    lines.append("accounts reaching rung")
    rungs = report["per_rung"]
    for rung in sorted(set(rungs["active"]) | set(rungs["candidate"]), key=RANK.get):
        a, b = rungs["active"].get(rung, 0), rungs["candidate"].get(rung, 0)
        lines.append(f"  {rung:<20}{a:>14,}{b:>14,}{b - a:>+10,}")
    lines += ["", f"accounts whose outcome changes: {report['changed']['accounts']}"]
    lines += [f"  {how}: {n}" for how, n in report["changed"]["how"].items()]
    for account in report["accounts"]:
        lines.append(f"\n{account['customer']}")
        for key, (old, new) in account["changes"].items():
            lines.append(f"  {key}: {old} -> {new}")
        for side in SIDES:
            lines.append(f"  {side:<9}: {account[side].get('summary', '(no decision)')}")
    return "\n".join(lines)


def left_out_text(events: dict) -> str:
    left_out = events.get("left_out_no_policy_can_change") or {"accounts": 0, "events": 0}
    return (
        f"{left_out['accounts']:,} accounts no policy can change (no failed payment, nothing "
        f"in dunning in the window) and their {left_out['events']:,} events"
    )


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
