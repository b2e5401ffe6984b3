"""The shipped alert rules and Grafana dashboard: valid, and referring only to series that are exported."""

import json
import os
import re
import shutil
import subprocess
import threading

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_agent.client import Stats
from gateway_agent.dns.metrics import Metrics as DnsMetrics
from gateway_agent.metrics import AgentMetrics
from og_kernel.og_elements import Element
from og_kernel.og_firewall import Counters

from tests.support import TOP

ALERTS = os.path.join(TOP, "deploy", "monitoring", "alerts.yml")
DASHBOARD = os.path.join(TOP, "deploy", "monitoring", "grafana-dashboard.json")
SERIES = re.compile(r"\b((?:og|iptables)_[a-z0-9_]+)\b")


class FakeFirewall:
    def __init__(self, counters=None, denied=None):
        self.counted = counters or {Element.parse("198.51.100.10/32"): Counters(10, 1, 2000, 2)}
        self.refused = {"198.51.100.20": (3, 180)} if denied is None else denied
        self.asked = []

    def counters(self, expected):
        self.asked.append(sorted(e.text for e in expected))
        return dict(self.counted)

    def rejected(self):
        return (3, 180)

    def denied(self):
        return dict(self.refused)


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
    text = AgentMetrics(FakeAgent(), "gw1").render().decode()
    from server_app import create_app, init_db
    app = create_app(config={"data_dir": str(tmp_path), "secret_key": "m" * 32, "resolver_enabled": False,
                             "database_url": "sqlite:///%s/m.db" % tmp_path})
    init_db(app)
    text += app.test_client().get("/metrics").get_data(as_text=True)
    text += dns_metrics_text()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def dns_metrics_text():
    """og-dns's exposition with one child of every labelled family (a family without children has no samples)."""
    dns = DnsMetrics()
    dns.queries.labels("udp").inc()
    dns.responses.labels("SERVFAIL").inc()
    dns.upstream_errors.labels("192.0.2.53:53").inc()
    dns.caps_hit.labels("name").inc()
    return generate_latest(dns.registry).decode()


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
    done = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_query_uses_only_exported_series(tmp_path):
    exported = exported_names(tmp_path)
    assert {"iptables_bytes_count", "og_gateway_entry_bytes_total", "og_gateway_denied_packets_total",
            "og_server_revision", "og_dns_added_latency_seconds_bucket", "og_dns_learn_errors_total"} <= exported
    unknown = [(where, name) for where, expr in queries() for name in SERIES.findall(expr) if name not in exported]
    assert unknown == []


def test_outputguards_grafana_query_is_kept():
    exprs = [e for dummy, e in queries()]
    assert 'sum by (ip) (increase(iptables_bytes_count{type=~"OUTPUT",hostname=~"$host"}[2m]))' in exprs


def test_the_dashboard_shows_denied_attempts_by_destination():
    panels = dict(queries())
    assert panels["panel Denied attempts by destination (1 h)"] == (
        "topk(15, sum by (address) (increase(og_gateway_denied_packets_total[1h])))")


def samples(text):
    """{(sample name, sorted label items): value} of an exposition text, parsed by prometheus_client."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_address(text):
    """The samples of the families AgentMetrics writes itself (everything labelled per address or entry)."""
    return {k: v for k, v in samples(text).items() if k[0].startswith(("iptables_", "og_gateway_bytes",
                                                                       "og_gateway_packets", "og_gateway_entry",
                                                                       "og_gateway_denied"))}


def test_the_directly_written_families_parse_to_exactly_the_kernel_counters():
    agent = FakeAgent()
    agent.elements = {"198.51.100.10/32", "198.51.100.0/24 8000-8001/tcp", "2001:db8::10/128", "203.0.113.0/24"}
    agent.names = {"198.51.100.10/32": ["partner.example.com", 'odd"name\\x'],
                   "2001:db8::10/128": ["partner.example.com"]}
    agent.fw = FakeFirewall(counters={
        Element.parse("198.51.100.10/32"): Counters(10, 1, 2000, 2),
        Element.parse("198.51.100.0/24 8000-8001/tcp"): Counters(5, 1, 0, 0),
        Element.parse("2001:db8::10/128"): Counters(7, 1, 300, 3),
        Element.parse("203.0.113.0/24"): Counters(),
        # In the kernel although the agent does not expect it (drift): reported all the same.
        Element.parse("203.0.113.99/32"): Counters(1, 1, 1, 1),
    }, denied={"198.51.100.20": (3, 180), "2001:db8::20": (1, 80)})
    text = AgentMetrics(agent, 'gw"1').render().decode()

    def outputguard(ip, out, in_):
        host = ("hostname", 'gw"1')
        return {(name, (host, ("ip", ip), ("type", kind))): value
                for name, pair in (("iptables_bytes_count", (out[0], in_[0])),
                                   ("iptables_packets_count", (out[1], in_[1])))
                for kind, value in zip(("OUTPUT", "INPUT"), pair)}

    def og(address, c):
        return {("og_gateway_%s_total" % unit, (("address", address), ("direction", d))): v
                for unit, values in (("bytes", (c.out_bytes, c.in_bytes)), ("packets", (c.out_packets, c.in_packets)))
                for d, v in zip(("out", "in"), values)}

    def entry(name, shared, out_bytes, in_bytes, out_packets, in_packets):
        return {("og_gateway_%s_total" % family, (("direction", d), ("entry", name), ("shared", shared))): v
                for family, d, v in (("entry_bytes", "out", out_bytes), ("entry_bytes", "in", in_bytes),
                                     ("entry_packets", "out", out_packets), ("entry_packets", "in", in_packets))}

    expected = {}
    for ip, address, c in (("198.51.100.10", "198.51.100.10/32", Counters(10, 1, 2000, 2)),
                           ("198.51.100.0/24 8000-8001/tcp", "198.51.100.0/24 8000-8001/tcp", Counters(5, 1, 0, 0)),
                           ("2001:db8::10", "2001:db8::10/128", Counters(7, 1, 300, 3)),
                           ("203.0.113.0/24", "203.0.113.0/24", Counters()),
                           ("203.0.113.99", "203.0.113.99/32", Counters(1, 1, 1, 1))):
        expected.update(outputguard(ip, (c.out_bytes, c.out_packets), (c.in_bytes, c.in_packets)))
        expected.update(og(address, c))
    # 2001:db8::10/128 is partner.example.com's alone; 198.51.100.10/32 is shared: one series for the pair.
    expected.update(entry("partner.example.com", "false", 7, 300, 1, 3))
    expected.update(entry('odd"name\\x + partner.example.com', "true", 10, 2000, 1, 2))
    expected.update({("og_gateway_denied_packets_total", (("address", "198.51.100.20"),)): 3,
                     ("og_gateway_denied_bytes_total", (("address", "198.51.100.20"),)): 180,
                     ("og_gateway_denied_packets_total", (("address", "2001:db8::20"),)): 1,
                     ("og_gateway_denied_bytes_total", (("address", "2001:db8::20"),)): 80})
    assert per_address(text) == expected
    # sum() over the per-entry family counts each named element's bytes once.
    got = samples(text)
    assert sum(v for k, v in got.items() if k[0] == "og_gateway_entry_bytes_total") == 17 + 2300
    assert samples(text)[("og_gateway_allowed_elements", ())] == 5
    assert samples(text)[("og_gateway_rejected_packets_total", ())] == 3


def test_a_changed_allowlist_is_read_again_between_scrapes():
    agent = FakeAgent()
    metrics = AgentMetrics(agent, "gw1")
    metrics.render()
    # As the agent does: every change of its elements comes with a new revision (the collector's cue).
    agent.elements, agent.revision = {"198.51.100.10/32", "203.0.113.7/32 443/tcp"}, 5
    metrics.render()
    agent.elements, agent.revision = {"203.0.113.8/32"}, 6
    metrics.render()
    metrics.render()
    assert agent.fw.asked == [["198.51.100.10/32"], ["198.51.100.10/32", "203.0.113.7/32 443/tcp"],
                              ["203.0.113.8/32"], ["203.0.113.8/32"]]
    # A snapshot at the same revision (the server repairing a mismatch) brings a new names dict: read again too.
    agent.elements, agent.names = {"203.0.113.9/32"}, {"203.0.113.9/32": ["partner.example.com"]}
    metrics.render()
    assert agent.fw.asked[-1] == ["203.0.113.9/32"]


def test_a_real_render_passes_promtool_check_metrics():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; scripts/setup installs it for tests")
    agent = FakeAgent()
    agent.names["198.51.100.10/32"].append('with "quotes" and \\ backslash')
    text = AgentMetrics(agent, "gw1").render().decode()
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    # outputGuard's two series keep their names (its Grafana queries use them) although promtool dislikes _count.
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and not line.startswith(("iptables_bytes_count", "iptables_packets_count"))]
    assert problems == []


def test_the_health_endpoint_listens_on_ipv6_for_og_route():
    """metrics_listen "[::]:9900" (IPv6 gateways): og-route probes http://[gateway]:9900/healthz."""
    import types
    import urllib.request

    from gateway_agent.metrics import serve
    agent = types.SimpleNamespace(stats=types.SimpleNamespace(policy_ok=True))
    server = serve(agent, "[::1]:0", "gw-test")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen("http://[::1]:%d/healthz" % port, timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b"ok\n"
    finally:
        server.shutdown()
        server.server_close()


DNS_RULE_TESTS = """
rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'og_dns_responses_total{instance="gw1:9901", rcode="SERVFAIL"}'
        values: '0+10x10'
      - series: 'og_dns_upstream_errors_total{instance="gw1:9901", upstream="192.0.2.53:53"}'
        values: '0+20x10'
      - series: 'og_dns_responses_total{instance="gw2:9901", rcode="NOERROR"}'
        values: '0+10x10'
      - series: 'og_dns_upstream_errors_total{instance="gw2:9901", upstream="192.0.2.53:53"}'
        values: '0x10'
      - series: 'og_dns_learn_errors_total{instance="gw2:9901"}'
        values: '0 0 0 0 0 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 8m
        alertname: OutputguardDnsUpstreamFailing
        exp_alerts:
          - exp_labels: {severity: critical, instance: "gw1:9901"}
            exp_annotations:
              summary: "og-dns on gw1:9901 answers SERVFAIL: no upstream DNS server answers"
              description: "%s"
      - eval_time: 7m
        alertname: OutputguardDnsLearnFailing
        exp_alerts:
          - exp_labels: {severity: critical, instance: "gw2:9901"}
            exp_annotations:
              summary: "og-dns on gw2:9901 cannot add answers to the kernel learn sets"
              description: "%s"
      - eval_time: 10m
        alertname: OutputguardDnsCapHit
        exp_alerts: []
"""


def test_dns_alerts_fire_for_the_gateway_that_fails_and_only_for_it(tmp_path):
    """promtool's rule unit tests: SERVFAIL with upstream errors alerts gw1 only (gw2 answers NOERROR), a refused
    kernel add alerts gw2; nothing else fires."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; scripts/setup installs it for tests")
    with open(ALERTS) as fh:
        rules = {r["alert"]: r for g in yaml.safe_load(fh)["groups"] for r in g["rules"]}

    def described(name):
        return rules[name]["annotations"]["description"].replace("\\", "\\\\").replace('"', '\\"')
    test = tmp_path / "dns-rules-test.yml"
    test.write_text(DNS_RULE_TESTS % (json.dumps(ALERTS), described("OutputguardDnsUpstreamFailing"),
                                      described("OutputguardDnsLearnFailing")))
    done = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
