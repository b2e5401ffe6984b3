"""The shipped alert rules and Grafana dashboard: valid, and referring only to series that are exported."""

import json
import os
import re
import shutil
import subprocess
import threading

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_agent.client import Stats
from gateway_agent.metrics import AgentCollector
from og_kernel.og_elements import Element
from og_kernel.og_firewall import Counters

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALERTS = os.path.join(TOP, "deploy", "monitoring", "alerts.yml")
DASHBOARD = os.path.join(TOP, "deploy", "monitoring", "grafana-dashboard.json")
SERIES = re.compile(r"\b((?:og|iptables)_[a-z0-9_]+)\b")


class FakeFirewall:
    def counters(self, expected):
        return {Element.parse("198.51.100.10/32"): Counters(10, 1, 2000, 2)}

    def rejected(self):
        return (3, 180)


class FakeAgent:
    def __init__(self):
        self.lock = threading.Lock()
        self.elements = {"198.51.100.10/32"}
        self.names = {"198.51.100.10/32": ["partner.example.com"]}
        self.revision = 4
        self.stats = Stats()
        self.stats.apply_seconds.append(0.02)
        self.fw = FakeFirewall()


def exported_names(tmp_path):
    """Every sample name the agent and the server expose (histograms with _bucket/_sum/_count)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(FakeAgent(), "gw1"))
    text = generate_latest(registry).decode()
    from server_app import create_app, init_db
    app = create_app(config={"data_dir": str(tmp_path), "secret_key": "m" * 32, "resolver_enabled": False,
                             "database_url": "sqlite:///%s/m.db" % tmp_path})
    init_db(app)
    text += app.test_client().get("/metrics").get_data(as_text=True)
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def queries():
    with open(ALERTS) as fh:
        rules = yaml.safe_load(fh)
    exprs = [("alert " + r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    with open(DASHBOARD) as fh:
        dashboard = json.load(fh)
    exprs += [("panel " + p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    return exprs


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; scripts/setup installs it for tests")
    done = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_query_uses_only_exported_series(tmp_path):
    exported = exported_names(tmp_path)
    assert {"iptables_bytes_count", "og_gateway_entry_bytes_total", "og_server_revision"} <= exported
    unknown = [(where, name) for where, expr in queries() for name in SERIES.findall(expr) if name not in exported]
    assert unknown == []


def test_the_seed_grafana_query_is_kept():
    exprs = [e for _, e in queries()]
    assert 'sum by (ip) (increase(iptables_bytes_count{type=~"OUTPUT",hostname=~"$host"}[2m]))' in exprs
