"""The alerts and the dashboard that ship in deploy/: promtool passes them, and every metric
they query is one the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.live import jira_settings, serve

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
# Queried before the service exports them: metrics other changes add (the stream limit, the
# webhook's uncovered projects, a stalled sync). Each name leaves this list once it exists;
# the test fails when one here is exported, so the list cannot go stale.
ASSUMED: set[str] = set()  # names an alert may use before the service exports them
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset", "le"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def queries() -> list[str]:
    """Every PromQL expression of the alerts and the dashboard."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    found = [rule["expr"] for group in rules for rule in group["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found += [target["expr"] for panel in panels for target in panel.get("targets", [])]
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    return found + [v["query"] for v in variables if v["type"] == "query"]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: not functions, keywords, labels or variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana's variables
    expr = re.sub(r"\blabel_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    words = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {word for word in words if word.lower() not in _KEYWORDS}


def exported(text: str) -> set[str]:
    """Every sample name /metrics can show, including a labelled family with no sample yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name}
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter":
                names |= {name if name.endswith("_total") else f"{name}_total"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_names_are_read_from_queries() -> None:
    """The name reader finds metrics and skips functions, labels, keywords and variables."""
    expr = (
        'sum by (route) (rate(jsc_a_total{job=~"$job"}[$__rate_interval])) '
        "/ ignoring (x) jsc_b unless on (le) max_over_time(jsc_c[5m]) > 0.5"
    )
    assert metric_names(expr) == {"jsc_a_total", "jsc_b", "jsc_c"}
    assert metric_names("label_values(jsc_database_up, job)") == {"jsc_database_up"}


async def test_every_queried_metric_is_exported(sim, settings, db) -> None:
    """Each metric the alerts and the dashboard query is on a live /metrics, but the assumed."""
    async with serve(jira_settings(settings, sim)) as url, httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    names = exported(text)
    wanted = set().union(*map(metric_names, queries()))
    assert sorted(wanted - names - ASSUMED) == []
    assert sorted(ASSUMED & names) == [], "exported now: remove from ASSUMED"
    assert {"process_cpu_seconds_total", "python_gc_collections_total"} <= names


def test_every_alert_is_unit_tested() -> None:
    """alerts_test.yml makes every alert of alerts.yml fire and resolve."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = {rule["alert"] for group in rules for rule in group["rules"]}
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    resolved = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == fired == resolved


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool: apt-get install prometheus")
@pytest.mark.parametrize("check", [["check", "rules", ALERTS], ["test", "rules", ALERT_TESTS]])
def test_promtool_passes_the_alerts(check: list[object]) -> None:
    """promtool checks the rules, and their unit tests pass."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, *map(str, check)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_importable() -> None:
    """The dashboard has a uid, unique panel ids, and each graph a Prometheus query, placed on
    the 24-column grid."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert dashboard["uid"] and len(ids) == len(set(ids))
    assert all(panel["targets"] and panel["datasource"]["type"] == "prometheus" for panel in graphs)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
