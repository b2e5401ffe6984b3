"""og_firewall against the real kernel in namespaces: bytes do or don't cross the gateway."""

import json
import os

import pytest

from gwtopo import CLIENT_NET, GatewayTopology
from nslib import tcp_probe, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

FW = """
import json, sys
from og_kernel.og_firewall import EgressPolicy, Firewall, FirewallError
fw = Firewall(EgressPolicy([%r], "og-out"))
op = sys.argv[1]
args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
try:
    if op == "apply":
        fw.preflight(); print(json.dumps(fw.apply()))
    elif op == "plan":
        p = fw.plan(); print(json.dumps({"changed": p.changed, "diff": p.diff}))
    elif op == "replace":
        print(json.dumps([str(e) for e in fw.replace(args)]))
    elif op == "update":
        print(json.dumps([str(e) for e in fw.update(add=args["add"], remove=args["remove"])]))
    elif op == "elements":
        print(json.dumps(sorted(str(e) for e in fw.elements(args))))
    elif op == "counters":
        print(json.dumps({str(k): v.as_dict() for k, v in fw.counters().items()}))
    elif op == "remove":
        print(json.dumps(fw.remove()))
    elif op == "preflight":
        fw.preflight(); print("null")
except FirewallError as exc:
    print(json.dumps({"error": exc.msg}))
""" % CLIENT_NET


@pytest.fixture
def topo(netns_factory):
    return GatewayTopology(netns_factory, "fw")


def fw(topo, op, args=None):
    out = topo.gw_python(FW, op, *([json.dumps(args)] if args is not None else []))
    return json.loads(out.stdout)


def test_default_deny_then_allowed_passes_and_removed_is_refused(topo):
    assert fw(topo, "apply") is True
    assert fw(topo, "apply") is False  # idempotent
    assert tcp_probe(topo.client, "198.51.100.10", 80, timeout=1) == "refused"

    assert fw(topo, "replace", ["198.51.100.10/32"]) == []
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"
    assert tcp_probe(topo.client, "198.51.100.20", 80, timeout=1) == "refused"

    assert fw(topo, "update", {"add": ["198.51.100.20/32"], "remove": ["198.51.100.10/32"]}) == []
    assert fw(topo, "elements") == ["198.51.100.20/32"]
    assert tcp_probe(topo.client, "198.51.100.10", 80, timeout=1) == "refused"
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "ok"


def test_port_scoped_element_allows_only_that_port(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32 8000-8500/tcp"])
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 80, timeout=1) == "refused"
    # The range is folded back into one element when it matches what was asked.
    assert fw(topo, "elements", ["198.51.100.10/32 8000-8500/tcp"]) == ["198.51.100.10/32 8000-8500/tcp"]


def test_replace_is_exact_and_internal_elements_are_skipped(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32", "203.0.113.0/24"])
    skipped = fw(topo, "replace", ["198.51.100.20/32", "10.1.2.3/32", "127.0.0.1/32"])
    assert skipped == ["10.1.2.3/32", "127.0.0.1/32"]
    assert fw(topo, "elements") == ["198.51.100.20/32"]


def test_counters_count_each_direction(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    size = 300000
    got = topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                           "http://198.51.100.10/bytes/%d" % size])
    assert int(got.stdout) == size
    upload = 50000
    topo.client.run(["curl", "-s", "-o", "/dev/null", "--data-binary", "@-", "http://198.51.100.10/sink"],
                    input="y" * upload)
    counters = fw(topo, "counters")["198.51.100.10/32"]
    assert counters["in_bytes"] >= size
    assert counters["out_bytes"] >= upload
    assert counters["in_packets"] > 0 and counters["out_packets"] > 0
    # A snapshot that keeps the element keeps its counters.
    fw(topo, "replace", ["198.51.100.10/32", "198.51.100.20/32"])
    assert fw(topo, "counters")["198.51.100.10/32"]["in_bytes"] >= size


def test_forward_policy_drop_and_foreign_rules_are_respected(topo):
    topo.gw.run(["iptables", "-P", "FORWARD", "DROP"])
    topo.gw.run(["iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT", "-m", "comment",
                 "--comment", "foreign"])
    topo.gw.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "lan0", "-j", "RETURN"])
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.20", 80, timeout=1) == "refused"
    assert fw(topo, "remove") is True
    forward = topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines()
    assert forward == ["-P FORWARD DROP",
                       '-A FORWARD -s 192.0.2.0/24 -m comment --comment foreign -j ACCEPT']
    assert topo.gw.run(["iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines()[1:] == [
        "-A POSTROUTING -o lan0 -j RETURN"]
    assert "og-" not in topo.gw.run(["ipset", "list", "-n"]).stdout
    assert "OG-" not in topo.gw.run(["iptables-save"]).stdout
    assert fw(topo, "remove") is False


def test_plan_shows_a_readable_diff_and_changes_nothing(topo):
    plan = fw(topo, "plan")
    assert plan["changed"] is True
    assert plan["diff"]["before"] == "\n"
    assert "iptables FORWARD: jump to OG-FORWARD at position 1" in plan["diff"]["after"]
    assert "ipset og-clients4 hash:net: 10.88.0.0/24" in plan["diff"]["after"]
    assert topo.gw.run(["ipset", "list", "-n"]).stdout == ""
    fw(topo, "apply")
    assert fw(topo, "plan")["changed"] is False


def test_preflight_names_the_problem(topo):
    topo.gw.run(["ipset", "create", "og-allow4", "hash:ip"])
    error = fw(topo, "preflight")["error"]
    assert "ipset og-allow4 exists as hash:ip" in error and "ipset destroy og-allow4" in error
    topo.gw.run(["ipset", "destroy", "og-allow4"])
    topo.gw.run(["ip", "link", "set", "og-out", "name", "wan9"])
    error = fw(topo, "preflight")["error"]
    assert error.startswith("outside interface 'og-out' does not exist on this host")
