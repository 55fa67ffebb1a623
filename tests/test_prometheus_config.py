"""deploy/ as Prometheus and Grafana read it: promtool accepts the config and the rules, the rules' own unit
tests (tests/prometheus/) show each alert firing when it should and only then, and the Grafana dashboard
queries one Prometheus data source. (test_observability_stack.py runs every query against live processes.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prometheus_support import CONFIG, DASHBOARD, RULES, rules

RULE_TESTS = sorted((Path(__file__).parent / "prometheus").glob("*-test.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=300)


def test_promtool_accepts_the_config_and_the_rules():
    config = promtool("check", "config", str(CONFIG))
    assert config.returncode == 0 and "1 rule files found" in config.stdout, config.stdout + config.stderr
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_when_it_should_and_only_then():
    assert len(RULE_TESTS) == 2
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = "\n".join(path.read_text() for path in RULE_TESTS)
    untested = [rule["alert"] for rule in rules() if "alert" in rule and f"alertname: {rule['alert']}" not in tested]
    assert untested == []


def test_every_alert_states_its_threshold_apart_from_its_series():
    """The stack test turns `series OP threshold` into a 0/1 query; an alert written otherwise escapes it."""
    for rule in rules():
        if "alert" in rule:
            assert any(f" {op} " in rule["expr"] for op in ("==", "!=", ">=", "<=", ">", "<")), rule["alert"]
            assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")


def test_the_dashboard_queries_one_prometheus_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["expr"] and t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    [promotions] = [a for a in dashboard["annotations"]["list"] if a.get("name") == "Promotions"]
    assert promotions["useValueForTime"] and "flywheel_model_promoted_timestamp_seconds" in promotions["expr"]
