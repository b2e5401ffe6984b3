"""The og_iptables_allow module for real: the `ansible` CLI runs it inside the gateway namespace.

The collection is found through a temporary ANSIBLE_COLLECTIONS_PATH whose ansible_collections/outputguard/egress
is a symlink to this repository, so the code under test is the working tree.
"""

import os

import pytest

from tests.support.ansiblelib import Ansible
from tests.support.gwtopo import GatewayTopology
from tests.support.nslib import tcp_probe

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

MODULE = "outputguard.egress.og_iptables_allow"
POLICY = {"client_networks": ["10.88.0.0/24"], "outside_interface": "og-out"}


@pytest.fixture
def topo(netns_factory):
    return GatewayTopology(netns_factory, "dmod")


@pytest.fixture
def ansible(topo, tmp_path):
    return Ansible(tmp_path, ns=topo.gw, module=MODULE)


def og_objects(topo):
    sets = [s for s in topo.gw.run(["ipset", "list", "-n"]).stdout.split() if s.lower().startswith("og-")]
    rules = [line for cmd in ("iptables-save", "ip6tables-save")
             for line in topo.gw.run([cmd]).stdout.splitlines() if "OG-" in line or "og-" in line]
    return sets + rules


def denied(topo):
    """{address: (packets, bytes)} recorded in og-denied4 (refused new connection attempts)."""
    lines = topo.gw.run(["ipset", "list", "-o", "save", "og-denied4"]).stdout.splitlines()
    words = [line.split() for line in lines if line.startswith("add ")]
    return {w[2]: (int(w[w.index("packets") + 1]), int(w[w.index("bytes") + 1])) for w in words}


def test_present_check_diff_idempotence_exclusive_and_absent(topo, ansible):
    foreign = "-A FORWARD -s 192.0.2.0/24 -j ACCEPT"
    topo.gw.run(["iptables", "-P", "FORWARD", "DROP"])
    topo.gw.run(["iptables"] + foreign.split())
    args = dict(POLICY, allowed=["198.51.100.10", "10.1.2.3"])

    status, result, printed = ansible(args, "--check", "--diff")
    assert (status, result["changed"], result["elements"], result["added"], result["refused"]) == (
        "CHANGED", True, ["198.51.100.10/32"], ["198.51.100.10/32"], ["10.1.2.3/32"])
    assert og_objects(topo) == []  # check mode changed nothing
    diff = printed.splitlines()
    for line in ("+allowed 198.51.100.10/32", "+iptables -t filter FORWARD rule 1: -j OG-FORWARD",
                 "+ipset og-clients4 hash:net family inet: 10.88.0.0/24",
                 "+iptables -t nat OG-POSTROUTING rule 1: -o og-out -m set --match-set og-clients4 src -j MASQUERADE",
                 "+ipset og-denied4 hash:ip family inet timeout 3600 counters",
                 "+iptables -t filter OG-REJECT rule 2: -m conntrack --ctstate NEW -j SET --add-set og-denied4 dst"):
        assert line in diff
    assert "[WARNING]: allowed element 10.1.2.3/32 was refused: it lies inside an internal network or is IPv6 " \
           "while ipv6 is false" in printed

    status, result, dummy = ansible(args)
    assert (status, result["changed"], result["elements"], result["refused"]) == (
        "CHANGED", True, ["198.51.100.10/32"], ["10.1.2.3/32"])
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "refused"
    assert denied(topo) == {"198.51.100.20": (1, 60)}  # the refused SYN, counted against its destination
    assert topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines() == [
        "-P FORWARD DROP", "-A FORWARD -j OG-FORWARD", foreign]

    status, result, printed = ansible(args, "--diff")
    assert (status, result["changed"], result["added"]) == ("SUCCESS", False, [])
    assert "--- before" not in printed

    status, result, dummy = ansible(dict(POLICY))  # without allowed, the allowlist is left alone
    assert (status, result["changed"], result["elements"]) == ("SUCCESS", False, ["198.51.100.10/32"])

    exclusive = dict(POLICY, allowed=["198.51.100.20/32 80/tcp"], exclusive=True)
    status, result, printed = ansible(exclusive, "--diff")
    assert (status, result["elements"], result["added"], result["removed"]) == (
        "CHANGED", ["198.51.100.20/32 80/tcp"], ["198.51.100.20/32 80/tcp"], ["198.51.100.10/32"])
    assert "-allowed 198.51.100.10/32" in printed.splitlines()
    assert "+allowed 198.51.100.20/32 80/tcp" in printed.splitlines()
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "refused"
    assert ansible(exclusive)[0] == "SUCCESS"

    # Not exclusive: only adds (the same address with and without a port are two elements).
    status, result, dummy = ansible(dict(POLICY, allowed=["198.51.100.10/32", "198.51.100.20"]))
    allowed = ["198.51.100.10/32", "198.51.100.20/32", "198.51.100.20/32 80/tcp"]
    assert (status, result["elements"], result["added"], result["removed"]) == (
        "CHANGED", allowed, ["198.51.100.10/32", "198.51.100.20/32"], [])
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"

    status, result, dummy = ansible({"state": "absent"}, "--check")
    assert (status, result["removed"]) == ("CHANGED", allowed)
    assert og_objects(topo) != []
    status, result, printed = ansible({"state": "absent"}, "--diff")
    assert status == "CHANGED"
    assert "-iptables -t filter FORWARD rule 1: -j OG-FORWARD" in printed.splitlines()
    assert og_objects(topo) == []
    assert topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines() == ["-P FORWARD DROP", foreign]
    assert ansible({"state": "absent"})[:2] == ("SUCCESS", {"changed": False, "elements": [], "added": [],
                                                            "removed": [], "refused": []})


def test_errors_name_the_problem_and_change_nothing(topo, ansible):
    status, result, dummy = ansible(dict(POLICY, outside_interface="wan9"))
    assert (status, result["msg"]) == ("FAILED!", "outside interface 'wan9' does not exist on this host "
                                       "(interfaces: lan0, lo, og-out); set outside_interface to the interface "
                                       "that leads to the internet")

    topo.gw.run(["ipset", "create", "og-allowp4", "hash:ip,port"])
    status, result, dummy = ansible(POLICY)
    assert status == "FAILED!"
    assert result["msg"].startswith("ipset og-allowp4 exists as hash:ip,port (family inet ")
    assert result["msg"].endswith(") but must be hash:net,port family inet with counters; it is in the way: "
                                  "remove it with `ipset destroy og-allowp4` (after removing the rules that use it)")
    # The same keys as a success, and the failure keys (no command failed: none to show).
    assert {k: v for k, v in result.items() if k != "msg"} == {
        "changed": False, "elements": [], "added": [], "removed": [], "refused": [], "cmd": None, "rc": None,
        "stdout": "", "stderr": "", "stdout_lines": [], "stderr_lines": []}
    assert og_objects(topo) == ["og-allowp4"]
    topo.gw.run(["ipset", "destroy", "og-allowp4"])

    status, result, dummy = ansible(dict(POLICY, allowed=["api.example.com"]))
    assert status == "FAILED!"
    assert result["msg"] == ("allowed: element 'api.example.com' has an invalid network: 'api.example.com' does not "
                             "appear to be an IPv4 or IPv6 network; write addresses, networks or '<network> "
                             "<port>/<proto>' (domain names are resolved by the outputguard server, not here)")
    status, result, dummy = ansible({"client_networks": ["10.88.0.1/24"], "outside_interface": "og-out"})
    assert (status, result["msg"]) == ("FAILED!", "client network '10.88.0.1/24' has host bits set; did you mean "
                                                  "10.88.0.0/24?")
    assert og_objects(topo) == []


def test_dns_over_tls_is_refused_unless_allowed_and_the_learn_sets_come_with_the_policy(topo, ansible):
    dot = "-A OG-FORWARD -o og-out -p tcp -m set --match-set og-clients4 src -m tcp --dport 853 -j OG-REJECT"
    status, result, printed = ansible(POLICY, "--diff")
    assert status == "CHANGED"
    assert "+ipset og-learn4 hash:ip family inet timeout 3600 counters" in printed.splitlines()
    assert "+ipset og-learnp4 hash:ip,port family inet timeout 3600 counters" in printed.splitlines()
    rules = topo.gw.run(["iptables", "-S", "OG-FORWARD"]).stdout.splitlines()
    assert rules[1] == dot
    status, result, printed = ansible(dict(POLICY, allow_dns_over_tls=True), "--diff")
    assert status == "CHANGED"
    assert "-iptables -t filter OG-FORWARD rule 1: " + dot[len("-A OG-FORWARD "):] in printed.splitlines()
    assert dot not in topo.gw.run(["iptables", "-S", "OG-FORWARD"]).stdout.splitlines()
    assert ansible(dict(POLICY, allow_dns_over_tls=True))[0] == "SUCCESS"
    assert ansible({"state": "absent"})[0] == "CHANGED"
    assert og_objects(topo) == []
