"""What operators import (deploy/monitoring/): the PrometheusRule's rules pass `promtool check
rules` and its unit tests `promtool test rules`; the Grafana dashboard is valid JSON whose
panels all query. (That every metric the dashboard names exists in a running FPS's /metrics is
tests/integration/test_reports.py::test_dashboard_and_rules_name_only_metrics_fps_exports.)"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
# promtool is unpacked from Debian's prometheus package into build/ (Makefile PROMTOOL_DEB); the
# package itself is not installed, since it would start a Prometheus server.
PROMTOOL = os.environ.get("PROMTOOL") or str(ROOT / "build" / "prometheus" / "usr" / "bin" / "promtool")


@pytest.fixture
def rules_file(tmp_path):
    doc = yaml.safe_load((MON / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    f = tmp_path / "fps-rules.yaml"
    f.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    shutil.copy(MON / "prometheusrule.test.yaml", tmp_path / "prometheusrule.test.yaml")
    return f


def test_rules_pass_promtool_check_and_their_unit_tests(rules_file):
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "test", "rules", str(rules_file.parent / "prometheusrule.test.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_is_importable_json_with_a_query_per_panel():
    d = json.loads((MON / "grafana-dashboard.json").read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
