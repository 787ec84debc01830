"""The operator's kit under deploy/: alert rules (checked and unit-tested with promtool) and
the Grafana dashboard, whose every query must read a metric /metrics serves."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dunning-dashboard.json"
METRIC_NAME = re.compile(r"\bdunning_[a-z0-9_]+\b")
# The sample names a `# TYPE <name> <type>` line stands for (prometheus_client's text
# format names counters with `_total` already, and a gauge histogram as a histogram).
SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}
MUST_WAKE_SOMEONE = {
    "DunningWebhookEventsDeadOrFailing",
    "DunningOutboxStalled",
    "DunningCasesStuckInLifting",
    "DunningStandingsUnacknowledged",
    "DunningBadDebtEntriesJump",
    "DunningWebhookGapsRecovered",
    "DunningHealthCheckFailing",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def test_the_alert_rules_are_valid():
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests():
    result = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_every_alert_that_must_wake_someone_pages_and_points_to_its_runbook():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) >= MUST_WAKE_SOMEONE
    for name in MUST_WAKE_SOMEONE:
        assert rules[name]["labels"]["severity"] == "page"
    for name, rule in rules.items():
        assert rule["annotations"]["runbook"].endswith(f"/ {name}")
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == set(rules), "every alert has a promtool test that makes it fire"


@pytest.fixture
def served_metrics(client, db) -> set[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    served = set()
    for line in response.content.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            served.update(name + suffix for suffix in SUFFIXES[kind])
    return served


def test_the_dashboard_reads_only_metrics_that_metrics_serves(served_metrics):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert exprs
    for title, expr in exprs:
        names = set(METRIC_NAME.findall(expr))
        assert names, f"{title}: {expr} reads no dunning metric"
        assert names <= served_metrics, f"{title}: not served: {sorted(names - served_metrics)}"


def test_the_dashboard_has_what_on_call_needs():
    exprs = " ".join(
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel.get("targets", [])
    )
    for needed in (
        "dunning_webhook_events_failed",  # events by state
        "dunning_webhook_events_dead_total",
        "sum by (level) (dunning_cases",  # cases by level
        "sum by (decline_class, outcome) (increase(dunning_payment_retries_total",
        "dunning_bad_debt_entries_total",  # bad debt in and out
        "dunning_bad_debt_exits_total",
        "dunning_outbox_due",  # outbox backlog and age
        "dunning_outbox_oldest_due_age_seconds",
    ):
        assert needed in exprs


def test_the_alert_rules_read_only_metrics_that_metrics_serves(served_metrics):
    for rule in alert_rules():
        names = set(METRIC_NAME.findall(rule["expr"]))
        assert names <= served_metrics, f"{rule['alert']}: {sorted(names - served_metrics)}"
