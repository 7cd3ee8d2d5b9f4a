"""The Grafana dashboard (deploy/grafana/virtcenter.json) and the alert rules
(deploy/prometheus/alerts.yml) name only metrics the processes serve, and every dashboard query
is PromQL that Prometheus parses (`promtool check rules` over them as recording rules; the
alert rules themselves are checked by scripts/lint.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vcenter.api.app import HttpMetrics
from vcenter.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/virtcenter.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def served_names() -> set[str]:
    """Every sample name of virtcenter's own families (vcenter_*), whatever the role."""
    families = [f for role in metrics.ROLE_FAMILIES.values() for f in role] + [metrics.PROCESS_INFO]
    families += [HttpMetrics().requests_total, HttpMetrics().latency]
    state = metrics.ServerStateCollector(lambda: metrics.ServerState([("k", "queued", 1)], 0, 0.0, [(1, "h", 1.0), (2, "g", None)]))
    pools = metrics.PoolCollector(lambda: [])
    names = set()
    for family in families:
        for m in family.describe():
            names.update(m.name + suffix for suffix in SUFFIXES[m.type])
    for collector in (state, pools):
        names.update(m.name for m in collector.collect())
    return names


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def alert_queries() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("queries", [dashboard_queries, alert_queries], ids=["dashboard", "alerts"])
def test_queries_name_only_metrics_the_processes_serve(queries):
    served = served_names()
    named = {name for expr in queries() for name in re.findall(r"\bvcenter_[a-z0-9_]+", expr)}
    assert named, "no virtcenter metric named"
    assert named - served == set(), sorted(named - served)


def test_the_dashboard_is_importable_json_with_a_datasource_variable():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "virtcenter" and board["panels"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in board["templating"]["list"])
    assert all(p.get("datasource", {}).get("uid") == "${datasource}" for p in board["panels"] if p["type"] != "row")
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus package (scripts/install.sh) is not installed")
def test_every_dashboard_query_parses(tmp_path):
    grafana = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*"}

    def concrete(expr: str) -> str:
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        return expr

    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": concrete(e)} for i, e in enumerate(dashboard_queries())]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "dashboard.yml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
