"""og_firewall against the real kernel in namespaces: bytes do or don't cross the gateway.

client ns (10.88.0.2) -> gateway ns (lan0 10.88.0.1 | og-out) -> internet ns with services on 198.51.100.10
and 198.51.100.20 (tests/support/gwtopo.py). Every kernel change runs inside the gateway namespace with
OG_REFUSE_ROOT_NETNS=1, so a mistake could never reach the machine's own firewall.
"""

import json
import os
import sys
import time

import pytest

from tests.support import TOP
from tests.support.gwtopo import CLIENT_NET, GatewayTopology
from tests.support.nslib import tcp_probe, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

V4 = {"client_networks": [CLIENT_NET], "outside_interface": "og-out", "ipv6": False}
V6 = {"client_networks": [CLIENT_NET, "fd00:88::/64"], "outside_interface": "og-out", "ipv6": True}

# One operation of og_firewall inside the gateway namespace; prints JSON.
FW = """
import json, sys
from og_kernel.og_firewall import EgressPolicy, Firewall, FirewallError
policy, op = json.loads(sys.argv[1]), sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
fw = Firewall(EgressPolicy(policy["client_networks"], policy["outside_interface"], policy["ipv6"],
                           allow_dns_over_tls=policy.get("allow_dns_over_tls", False),
                           mode=policy.get("mode", "enforce")))
try:
    if op == "apply":
        fw.preflight(); out = fw.apply()
    elif op == "plan":
        p = fw.plan(); out = {"changed": p.changed, "diff": p.diff, "steps": [str(s) for s in p.steps]}
    elif op == "replace":
        out = [str(e) for e in fw.replace(args)]
    elif op == "update":
        out = [str(e) for e in fw.update(add=args["add"], remove=args["remove"])]
    elif op == "elements":
        out = sorted(str(e) for e in fw.elements(args))
    elif op == "counters":
        out = {str(k): v.as_dict() for k, v in fw.counters(args).items()}
    elif op == "rejected":
        out = list(fw.rejected())
    elif op == "denied":
        out = {address: list(counts) for address, counts in fw.denied().items()}
    elif op == "blocked":
        out = sorted((a.as_dict() for a in fw.blocked()),
                     key=lambda d: (d["client"], d["destination"], d["port"], d["observed"]))
    elif op == "clients":
        rows, full = fw.client_counters()
        out = {"clients": {r.client: r.as_dict() for r in rows}, "full": full}
    elif op == "metrics":
        # The agent's collector on this real firewall, the agent stood in for by what the collector reads.
        import threading, types
        from gateway_agent.client import Stats
        from gateway_agent.metrics import AgentMetrics
        if isinstance(args, list):
            args = {"elements": args}
        agent = types.SimpleNamespace(lock=threading.Lock(), elements=args["elements"], names=args.get("names", {}),
                                      fw=fw, revision=1, stats=Stats(), cfg=args.get("cfg", {}))
        out = AgentMetrics(agent, "gw1").render().decode()
    elif op == "remove":
        out = fw.remove()
    elif op == "preflight":
        fw.preflight(); out = None
    print(json.dumps(out))
except FirewallError as exc:
    print(json.dumps({"error": exc.msg}))
"""


@pytest.fixture
def topo(netns_factory, monkeypatch):
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    return GatewayTopology(netns_factory, "dfw")


def fw(topo, op, args=None, policy=None):
    argv = [json.dumps(V4 if policy is None else policy), op] + ([json.dumps(args)] if args is not None else [])
    return json.loads(topo.gw_python(FW, *argv).stdout)


def og_objects(topo):
    """Every og-/OG- object left in the gateway namespace (IPv4 and IPv6)."""
    sets = [s for s in topo.gw.run(["ipset", "list", "-n"]).stdout.split() if s.lower().startswith("og-")]
    rules = [line for cmd in ("iptables-save", "ip6tables-save")
             for line in topo.gw.run([cmd]).stdout.splitlines() if "OG-" in line or "og-" in line]
    return sets + rules


def refused_fast(topo, host, port):
    """A blocked client fails at once with a reset, instead of timing out."""
    started = time.monotonic()
    result = tcp_probe(topo.client, host, port, timeout=3)
    return result == "refused" and time.monotonic() - started < 1.5


def test_default_deny_then_allowed_passes_and_removed_is_refused(topo):
    # The internet has no route back to the clients: only our masquerade makes answers find their way.
    assert tcp_probe(topo.client, "198.51.100.10", 80, timeout=0.5) == "timeout"
    assert fw(topo, "apply") is True
    assert fw(topo, "apply") is False
    assert refused_fast(topo, "198.51.100.10", 80)
    assert fw(topo, "rejected")[0] >= 1

    assert fw(topo, "replace", ["198.51.100.10/32"]) == []
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"
    assert refused_fast(topo, "198.51.100.20", 80)

    assert fw(topo, "update", {"add": ["198.51.100.20/32"], "remove": ["198.51.100.10/32"]}) == []
    assert fw(topo, "elements") == ["198.51.100.20/32"]
    assert refused_fast(topo, "198.51.100.10", 80)
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "ok"


def test_other_protocols_are_rejected_with_admin_prohibited(topo):
    fw(topo, "apply")
    before = fw(topo, "rejected")[0]
    code = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n"
            "s.connect(('198.51.100.10', 5353))\ns.send(b'x')\n"
            "try:\n s.recv(10); print('answer')\nexcept OSError as e: print(e.errno)\n")
    # ICMP administratively prohibited reaches a connected UDP socket as EHOSTUNREACH (113).
    assert topo.client.run([sys.executable, "-c", code]).stdout.strip() == "113"
    assert fw(topo, "rejected")[0] == before + 1


def test_port_scoped_element_allows_only_that_port(topo):
    fw(topo, "apply")
    assert fw(topo, "replace", ["198.51.100.10/32 80/tcp"]) == []
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert refused_fast(topo, "198.51.100.10", 8443)
    assert refused_fast(topo, "198.51.100.20", 80)
    # A range is added as one range and read back as that element, without being told.
    assert fw(topo, "update", {"add": ["198.51.100.10/32 8000-8500/tcp"], "remove": ["198.51.100.10/32 80/tcp"]}) == []
    assert fw(topo, "elements") == ["198.51.100.10/32 8000-8500/tcp"]
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"
    assert refused_fast(topo, "198.51.100.10", 80)
    members = topo.gw.run(["ipset", "list", "-o", "save", "og-allowp4-in"]).stdout.count("\nadd ")
    assert members == 501


def test_replace_is_exact_atomic_and_skips_internal_elements(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32", "203.0.113.0/24", "198.51.100.20/32 80/tcp"])
    skipped = fw(topo, "replace", ["198.51.100.20/32", "10.1.2.3/32", "127.0.0.1/32", "203.0.113.0/24 8000-8100/tcp"])
    assert skipped == ["10.1.2.3/32", "127.0.0.1/32"]
    assert fw(topo, "elements") == ["198.51.100.20/32", "203.0.113.0/24 8000-8100/tcp"]
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "ok"
    assert refused_fast(topo, "198.51.100.10", 80)
    # No temporary set is left behind and the out and in sets hold the same members.
    assert sorted(topo.gw.run(["ipset", "list", "-n"]).stdout.split()) == [
        "og-allow4", "og-allow4-in", "og-allowp4", "og-allowp4-in", "og-blocked4", "og-clients4", "og-denied4",
        "og-learn4", "og-learnp4", "og-observed4", "og-perclient4", "og-perclient4-in"]
    save = topo.gw.run(["ipset", "save"]).stdout.splitlines()
    for out_set, in_set in (("og-allow4", "og-allow4-in"), ("og-allowp4", "og-allowp4-in")):
        outs = sorted(line.split()[2] for line in save if line.startswith("add %s " % out_set))
        ins = sorted(line.split()[2] for line in save if line.startswith("add %s " % in_set))
        assert outs == ins
    assert fw(topo, "replace", []) == []
    assert fw(topo, "elements") == []
    assert refused_fast(topo, "198.51.100.20", 80)


def metric_samples(text, name):
    """{labels: value} of one series in an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def test_denied_attempts_are_counted_per_destination_and_go_with_the_policy(topo):
    plan = fw(topo, "plan")["diff"]["after"].splitlines()
    assert "ipset og-denied4 hash:ip family inet timeout 3600 counters" in plan
    assert "iptables -t filter OG-REJECT rule 2: -m conntrack --ctstate NEW -j SET --add-set og-denied4 dst" in plan
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    assert fw(topo, "denied") == {}
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    for dummy in range(3):
        assert refused_fast(topo, "198.51.100.20", 80)
    # One SYN per attempt (60 bytes: 20 IP + 20 TCP + 20 options), each counted once: the first by SET creating
    # the element, the others by the set match.
    assert fw(topo, "denied") == {"198.51.100.20": [3, 180]}
    assert fw(topo, "rejected") == [3, 180]  # the recording rules are not counted as rejections
    # The allowed connection never reached OG-REJECT; the element expires an hour after the first attempt.
    saved = topo.gw.run(["ipset", "list", "-o", "save", "og-denied4"]).stdout.splitlines()
    assert saved[0].startswith("create og-denied4 hash:ip family inet hashsize 1024 maxelem 65536 timeout 3600 "
                               "counters ")
    member = saved[1].split()
    assert member[:3] == ["add", "og-denied4", "198.51.100.20"] and 3500 < int(member[4]) <= 3600
    text = fw(topo, "metrics", ["198.51.100.10/32"])
    assert metric_samples(text, "og_gateway_denied_packets_total") == {(("address", "198.51.100.20"),): 3.0}
    assert metric_samples(text, "og_gateway_denied_bytes_total") == {(("address", "198.51.100.20"),): 180.0}
    # Re-applying changes nothing; absent removes the sets with the rules that use them.
    assert fw(topo, "plan")["changed"] is False
    assert fw(topo, "remove") is True
    assert og_objects(topo) == []
    assert fw(topo, "denied") == {}


def test_refused_attempts_are_recorded_per_client_destination_and_port(topo):
    plan = fw(topo, "plan")["diff"]["after"].splitlines()
    assert "ipset og-blocked4 hash:ip,port,ip family inet timeout 3600 counters" in plan
    assert ("iptables -t filter OG-REJECT rule 4: -m conntrack --ctstate NEW -j SET --add-set og-blocked4 "
            "dst,dst,src") in plan
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32 80/tcp"])
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert fw(topo, "blocked") == []
    for dummy in range(2):
        assert refused_fast(topo, "198.51.100.20", 80)
    assert refused_fast(topo, "198.51.100.10", 8443)  # allowed address, other port: refused, recorded by its port
    # A second client address on the same client network.
    topo.client.ip("addr", "add", "10.88.0.3/24", "dev", "eth0")
    assert topo.client.run(["curl", "-s", "-m", "2", "--interface", "10.88.0.3", "http://198.51.100.20/"],
                           check=False).returncode == 7  # connection refused
    got = fw(topo, "blocked")
    for row in got:
        assert 0 <= row.pop("age") < 100
    assert got == [
        {"client": "10.88.0.2", "destination": "198.51.100.10", "proto": "tcp", "port": "8443", "packets": 1,
         "bytes": 60, "observed": False},
        {"client": "10.88.0.2", "destination": "198.51.100.20", "proto": "tcp", "port": "80", "packets": 2,
         "bytes": 120, "observed": False},
        {"client": "10.88.0.3", "destination": "198.51.100.20", "proto": "tcp", "port": "80", "packets": 1,
         "bytes": 60, "observed": False},
    ]
    # The per-destination metric set still counts the same attempts.
    assert fw(topo, "denied") == {"198.51.100.10": [1, 60], "198.51.100.20": [3, 180]}
    assert fw(topo, "remove") is True
    assert og_objects(topo) == []
    assert fw(topo, "blocked") == []


def test_observe_mode_forwards_what_it_would_refuse_and_records_it_apart(topo):
    observe = dict(V4, mode="observe")
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    assert refused_fast(topo, "198.51.100.20", 80)
    # Switching is one chain reload; the allowlist stays.
    assert fw(topo, "plan", policy=observe)["steps"] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    assert fw(topo, "apply", policy=observe) is True
    # Bytes cross the gateway to a destination that enforce mode refuses.
    body = topo.client.run(["curl", "-s", "-m", "3", "http://198.51.100.20/"], check=False)
    assert body.returncode == 0 and body.stdout
    assert tcp_probe(topo.client, "203.0.113.10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"  # allowed: never reaches OG-REJECT, not recorded
    rows = fw(topo, "blocked", policy=observe)
    for row in rows:
        row.pop("age")
    assert rows == [
        {"client": "10.88.0.2", "destination": "198.51.100.20", "proto": "tcp", "port": "80", "packets": 1,
         "bytes": 60, "observed": False},
        {"client": "10.88.0.2", "destination": "198.51.100.20", "proto": "tcp", "port": "80", "packets": 1,
         "bytes": 60, "observed": True},
        {"client": "10.88.0.2", "destination": "203.0.113.10", "proto": "tcp", "port": "80", "packets": 1,
         "bytes": 60, "observed": True},
    ]
    assert fw(topo, "denied") == {"198.51.100.20": [1, 60]}  # the metric counts refusals only
    # Back to enforce: refused again at once.
    assert fw(topo, "apply") is True
    assert refused_fast(topo, "198.51.100.20", 80)
    assert fw(topo, "apply", policy=dict(V4, mode="audit")) == {
        "error": "gateway mode 'audit' is not one of enforce, observe: use enforce (refuse what is not allowed) or "
                 "observe (forward it and record it as would-have-been-refused)"}


def test_dns_over_tls_is_refused_even_to_an_allowed_address_unless_the_policy_allows_it(topo):
    topo.inet.popen([sys.executable, os.path.join(TOP, "scripts", "lab_http.py"), "198.51.100.10:853"])
    wait_until(lambda: tcp_probe(topo.inet, "198.51.100.10", 853) == "ok", what="a service on port 853")
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert refused_fast(topo, "198.51.100.10", 853)
    # Refused through OG-REJECT, so the attempt is counted like any other refused destination.
    assert fw(topo, "denied") == {"198.51.100.10": [1, 60]}
    allowed = dict(V4, allow_dns_over_tls=True)
    assert fw(topo, "plan", policy=allowed)["steps"] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    assert fw(topo, "apply", policy=allowed) is True
    assert tcp_probe(topo.client, "198.51.100.10", 853) == "ok"
    assert fw(topo, "elements") == ["198.51.100.10/32"]  # reloading the chains left the allowlist alone
    assert fw(topo, "apply") is True
    assert refused_fast(topo, "198.51.100.10", 853)


def learned(topo, name, member):
    """Seconds left of a member of a learn set, or None when it is not (or no longer) there."""
    for line in topo.gw.run(["ipset", "list", "-o", "save", name]).stdout.splitlines():
        words = line.split()
        if words[:3] == ["add", name, member]:
            return int(words[words.index("timeout") + 1])
    return None


def test_a_learned_address_passes_until_its_timeout_expires(topo):
    fw(topo, "apply")
    assert refused_fast(topo, "198.51.100.20", 80)
    # What og-dns does through netlink (og_learn), done here with the ipset tool: two members for 2 seconds each,
    # added right before the connection they let through, and one for ten minutes.
    topo.gw.run(["ipset", "add", "og-learn4", "198.51.100.99", "timeout", "600"])
    topo.gw.run(["ipset", "add", "og-learn4", "198.51.100.20", "timeout", "2"])
    assert tcp_probe(topo.client, "198.51.100.20", 80) == "ok"
    topo.gw.run(["ipset", "add", "og-learnp4", "198.51.100.10,tcp:8443", "timeout", "2"])
    assert tcp_probe(topo.client, "198.51.100.10", 8443) == "ok"
    assert refused_fast(topo, "198.51.100.10", 80)  # a learned port is only that port
    # replace() and re-applying the policy leave what og-dns learned alone.
    fw(topo, "replace", ["203.0.113.10/32"])
    assert fw(topo, "apply") is False
    assert learned(topo, "og-learn4", "198.51.100.99") > 500
    wait_until(lambda: learned(topo, "og-learn4", "198.51.100.20") is None
               and learned(topo, "og-learnp4", "198.51.100.10,tcp:8443") is None, timeout=10,
               what="the learned members to expire")
    assert refused_fast(topo, "198.51.100.20", 80)
    assert refused_fast(topo, "198.51.100.10", 8443)
    assert fw(topo, "remove") is True
    assert og_objects(topo) == []


def test_counters_count_each_direction(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32", "198.51.100.20/32 80/tcp"])
    size = 300000
    got = topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                           "http://198.51.100.10/bytes/%d" % size])
    assert int(got.stdout) == size
    upload = 50000
    topo.client.run(["curl", "-s", "-o", "/dev/null", "--data-binary", "@-", "http://198.51.100.20/sink"],
                    input="y" * upload)
    counters = fw(topo, "counters")
    assert counters["198.51.100.10/32"]["in_bytes"] >= size
    assert counters["198.51.100.10/32"]["out_bytes"] < size // 10  # requests and acks only
    assert counters["198.51.100.20/32 80/tcp"]["out_bytes"] >= upload
    assert counters["198.51.100.20/32 80/tcp"]["in_bytes"] < upload // 5
    assert min(counters["198.51.100.10/32"]["in_packets"], counters["198.51.100.10/32"]["out_packets"]) > 0
    # A snapshot that keeps an element keeps its counters; a new one starts at zero.
    fw(topo, "replace", ["198.51.100.10/32", "198.51.100.20/32 80/tcp", "203.0.113.0/24"])
    again = fw(topo, "counters")
    assert again["198.51.100.10/32"] == counters["198.51.100.10/32"]
    assert again["198.51.100.20/32 80/tcp"] == counters["198.51.100.20/32 80/tcp"]
    assert again["203.0.113.0/24"] == {"out_bytes": 0, "out_packets": 0, "in_bytes": 0, "in_packets": 0}


def test_traffic_is_counted_per_client_address_both_ways_and_only_what_crossed(topo):
    plan = fw(topo, "plan")["diff"]["after"].splitlines()
    assert "ipset og-perclient4 hash:ip family inet timeout 3600 counters" in plan
    assert "ipset og-perclient4-in hash:ip family inet timeout 3600 counters" in plan
    assert "iptables -t filter OG-ACCEPT rule 3: -o og-out -j SET --add-set og-perclient4 src" in plan
    fw(topo, "apply")
    assert fw(topo, "clients") == {"clients": {}, "full": []}
    fw(topo, "replace", ["198.51.100.10/32", "198.51.100.20/32 80/tcp"])
    topo.client.ip("addr", "add", "10.88.0.3/24", "dev", "eth0")
    down, up = 300000, 50000
    got = topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--interface", "10.88.0.2",
                           "http://198.51.100.10/bytes/%d" % down])
    assert int(got.stdout) == down
    topo.client.run(["curl", "-s", "-o", "/dev/null", "--interface", "10.88.0.3", "--data-binary", "@-",
                     "http://198.51.100.20/sink"], input="y" * up)
    # Refused: never crossed, so not counted for the client (it is recorded as blocked instead).
    assert topo.client.run(["curl", "-s", "-m", "2", "--interface", "10.88.0.3", "http://203.0.113.10/"],
                           check=False).returncode == 7
    got = fw(topo, "clients")
    assert got["full"] == []
    assert sorted(got["clients"]) == ["10.88.0.2", "10.88.0.3"]
    first, second = got["clients"]["10.88.0.2"], got["clients"]["10.88.0.3"]
    assert first["in_bytes"] >= down and first["out_bytes"] < down // 10
    assert second["out_bytes"] >= up and second["in_bytes"] < up // 5
    # Each packet once: the per-client sums equal the per-destination ones (the only traffic was to these two).
    counters = fw(topo, "counters")
    for field in ("out_bytes", "out_packets", "in_bytes", "in_packets"):
        assert first[field] + second[field] == sum(c[field] for c in counters.values())
    for row in (first, second):
        assert 0 <= row["out_age"] < 100 and 0 <= row["in_age"] < 100
    # A snapshot swaps the allowed sets, never the per-client ones: their counters go on.
    fw(topo, "replace", ["198.51.100.10/32"])
    assert fw(topo, "clients")["clients"]["10.88.0.2"]["in_bytes"] == first["in_bytes"]
    assert fw(topo, "apply") is False
    assert fw(topo, "remove") is True
    assert og_objects(topo) == []
    assert fw(topo, "clients") == {"clients": {}, "full": []}


def test_a_full_per_client_set_still_forwards_and_says_so(topo):
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    # The same set with room for one client (the type check looks at type, family, timeout and counters only).
    for name in ("og-perclient4", "og-perclient4-in"):
        topo.gw.run(["ipset", "create", name + "-t", "hash:ip", "family", "inet", "maxelem", "1", "timeout", "3600",
                     "counters"])
        topo.gw.run(["ipset", "swap", name + "-t", name])
        topo.gw.run(["ipset", "destroy", name + "-t"])
    topo.client.ip("addr", "add", "10.88.0.3/24", "dev", "eth0")
    for address in ("10.88.0.2", "10.88.0.3"):
        got = topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--interface", address,
                               "http://198.51.100.10/bytes/1000"])
        assert int(got.stdout) == 1000  # the second client passes although it is not counted
    got = fw(topo, "clients")
    assert sorted(got["clients"]) == ["10.88.0.2"]
    assert got["full"] == ["og-perclient4", "og-perclient4-in"]


def test_forward_policy_drop_and_foreign_rules_are_respected(topo):
    topo.gw.run(["iptables", "-P", "FORWARD", "DROP"])
    foreign = "-A FORWARD -s 192.0.2.0/24 -m comment --comment foreign -j ACCEPT"
    topo.gw.run(["iptables"] + foreign.split())
    topo.gw.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "lan0", "-j", "RETURN"])
    assert tcp_probe(topo.client, "198.51.100.10", 80, timeout=0.5) == "timeout"  # DROP, before we arrive
    fw(topo, "apply")
    fw(topo, "replace", ["198.51.100.10/32"])
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert refused_fast(topo, "198.51.100.20", 80)
    assert topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines() == [
        "-P FORWARD DROP", "-A FORWARD -j OG-FORWARD", foreign]
    assert topo.gw.run(["iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines() == [
        "-P POSTROUTING ACCEPT", "-A POSTROUTING -j OG-POSTROUTING", "-A POSTROUTING -o lan0 -j RETURN"]
    assert fw(topo, "remove") is True
    assert topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines() == ["-P FORWARD DROP", foreign]
    assert topo.gw.run(["iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines() == [
        "-P POSTROUTING ACCEPT", "-A POSTROUTING -o lan0 -j RETURN"]
    assert og_objects(topo) == []
    assert fw(topo, "remove") is False


def test_plan_shows_a_readable_diff_changes_nothing_and_apply_repairs_drift(topo):
    plan = fw(topo, "plan")
    assert plan["changed"] is True
    assert plan["diff"]["before"] == ""
    after = plan["diff"]["after"].splitlines()
    assert after == sorted(after)
    assert "iptables -t filter FORWARD rule 1: -j OG-FORWARD" in after
    assert "ipset og-clients4 hash:net family inet: 10.88.0.0/24" in after
    assert og_objects(topo) == []
    fw(topo, "apply")
    assert fw(topo, "plan") == {"changed": False, "diff": {"before": plan["diff"]["after"],
                                                           "after": plan["diff"]["after"]}, "steps": []}
    # Someone puts a rule above our jump and one into our chain: the plan names both, apply repairs them.
    topo.gw.run(["iptables", "-I", "FORWARD", "1", "-s", "192.0.2.0/24", "-j", "ACCEPT"])
    topo.gw.run(["iptables", "-A", "OG-FORWARD", "-j", "ACCEPT"])
    drift = fw(topo, "plan")
    assert drift["steps"] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT",
                              "iptables: jump from FORWARD to OG-FORWARD at position 1"]
    assert "iptables -t filter OG-FORWARD rule 11: -j ACCEPT" in drift["diff"]["before"].splitlines()
    assert fw(topo, "apply") is True
    assert fw(topo, "plan")["changed"] is False
    assert topo.gw.run(["iptables", "-S", "FORWARD"]).stdout.splitlines() == [
        "-P FORWARD ACCEPT", "-A FORWARD -j OG-FORWARD", "-A FORWARD -s 192.0.2.0/24 -j ACCEPT"]


def test_preflight_names_the_problem_and_changes_nothing(topo):
    topo.gw.run(["ipset", "create", "og-allow4", "hash:ip"])
    error = fw(topo, "preflight")["error"]
    assert error == ("ipset og-allow4 exists as hash:ip (family inet hashsize 1024 maxelem 65536 bucketsize 12 "
                     "initval %s) but must be hash:net family inet with counters; it is in the way: remove it with "
                     "`ipset destroy og-allow4` (after removing the rules that use it)"
                     % error.split("initval ")[1].split(")")[0])
    assert fw(topo, "apply") == {"error": error}
    assert topo.gw.run(["ipset", "list", "-n"]).stdout.split() == ["og-allow4"]
    topo.gw.run(["ipset", "destroy", "og-allow4"])
    topo.gw.run(["ip", "link", "set", "og-out", "down"])
    topo.gw.run(["ip", "link", "set", "og-out", "name", "wan9"])
    assert fw(topo, "preflight") == {"error": "outside interface 'og-out' does not exist on this host (interfaces: "
                                              "lan0, lo, wan9); set outside_interface to the interface that leads "
                                              "to the internet"}
    assert og_objects(topo) == []


def test_ipv6_has_its_own_sets_and_rules(topo):
    topo.client.ip("addr", "add", "fd00:88::2/64", "dev", "eth0", "nodad")
    topo.gw.ip("addr", "add", "fd00:88::1/64", "dev", "lan0", "nodad")
    topo.gw.ip("addr", "add", "2001:db8:113::2/64", "dev", "og-out", "nodad")
    topo.inet.ip("addr", "add", "2001:db8:113::1/64", "dev", "eth0", "nodad")
    topo.inet.ip("addr", "add", "2001:db8:100::10/128", "dev", "lo")
    topo.client.ip("-6", "route", "add", "default", "via", "fd00:88::1")
    topo.gw.ip("-6", "route", "add", "default", "via", "2001:db8:113::1")
    topo.gw.sysctl("net.ipv6.conf.all.forwarding", 1)
    topo.inet.popen([sys.executable, "-m", "http.server", "--bind", "2001:db8:100::10", "80"])
    wait_until(lambda: tcp_probe(topo.inet, "2001:db8:100::10", 80) == "ok", what="IPv6 HTTP service")
    assert tcp_probe(topo.client, "2001:db8:100::10", 80, timeout=0.5) == "timeout"  # no route back without NAT

    assert fw(topo, "apply", policy=V6) is True
    assert fw(topo, "plan", policy=V6)["changed"] is False
    assert refused_fast(topo, "2001:db8:100::10", 80)
    assert fw(topo, "replace", ["2001:db8:100::10/128 80/tcp", "198.51.100.10/32", "fd00::1/128"], policy=V6) == [
        "fd00::1/128"]
    assert tcp_probe(topo.client, "2001:db8:100::10", 80) == "ok"
    assert tcp_probe(topo.client, "198.51.100.10", 80) == "ok"
    assert fw(topo, "elements", policy=V6) == ["198.51.100.10/32", "2001:db8:100::10/128 80/tcp"]
    assert "-A OG-REJECT -j REJECT --reject-with icmp6-adm-prohibited" in topo.gw.run(["ip6tables", "-S"]).stdout
    assert fw(topo, "remove", policy=V6) is True
    assert og_objects(topo) == []


def test_update_keeps_members_an_overlapping_element_still_needs(netns_factory):
    ns = netns_factory("dfwkeep")
    ns.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
    code = """
import sys
from og_kernel.og_elements import Element
from og_kernel.og_firewall import EgressPolicy, Firewall
fw = Firewall(EgressPolicy(["10.88.0.0/24"], "og-out"))
fw.apply()
wide, narrow = Element.parse("198.51.100.10/32 8000-8010/tcp"), Element.parse("198.51.100.10/32 8005/tcp")
fw.replace([wide, narrow])
fw.update(remove=[narrow], keep=[wide])
print(sorted(e.text for e in fw.elements(expected=[wide])))
fw.update(remove=[wide])
print(sorted(e.text for e in fw.elements()))
"""
    out = ns.run([sys.executable, "-c", code]).stdout.splitlines()
    assert out == ["['198.51.100.10/32 8000-8010/tcp']", "[]"]


def test_an_element_missing_from_the_return_set_is_not_reported_as_allowed(netns_factory):
    ns = netns_factory("dfwin")
    ns.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
    code = """
from og_kernel.og_elements import Element
from og_kernel.og_firewall import EgressPolicy, Firewall
fw = Firewall(EgressPolicy(["10.88.0.0/24"], "og-out"))
fw.apply()
fw.replace([Element.parse("198.51.100.10/32"), Element.parse("198.51.100.20/32")])
import subprocess
subprocess.run(["ipset", "flush", "og-allow4-in"], check=True)
print(sorted(e.text for e in fw.elements()))
"""
    out = ns.run([sys.executable, "-c", code]).stdout.strip()
    assert out == "[]"


def test_an_address_both_plain_and_port_scoped_counts_each_packet_once_on_the_most_specific_element(topo):
    # 198.51.100.20 allowed plainly and as 198.51.100.20 80/tcp (a name and a port-scoped entry, issue 14).
    fw(topo, "apply")
    both = ["198.51.100.20/32", "198.51.100.20/32 80/tcp", "198.51.100.10/32", "198.51.100.10/32 80/tcp"]
    assert fw(topo, "replace", both) == []
    size = 2 * 1024 * 1024
    for url in ("http://198.51.100.20/bytes/%d" % size, "http://198.51.100.10:8443/bytes/%d" % size):
        got = topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", url])
        assert int(got.stdout) == size
    counters = fw(topo, "counters", both)
    zero = {"out_bytes": 0, "out_packets": 0, "in_bytes": 0, "in_packets": 0}
    # Port 80 matched the port-scoped element only; the plain element saw none of it.
    assert counters["198.51.100.20/32"] == zero
    assert counters["198.51.100.20/32 80/tcp"]["in_bytes"] >= size
    # Port 8443 is not in the port-scoped set: the plain element counts it, the port-scoped one nothing.
    assert counters["198.51.100.10/32 80/tcp"] == zero
    assert counters["198.51.100.10/32"]["in_bytes"] >= size
    # Each packet counted once: the sets' sum equals what the rules accepted, element by element.
    rules = topo.gw.run(["iptables", "-L", "OG-FORWARD", "-v", "-x", "-n"]).stdout.splitlines()[3:7]  # after DoT
    accepted = sum(int(line.split()[1]) for line in rules)
    assert accepted == sum(c["out_bytes"] + c["in_bytes"] for c in counters.values())


def test_metrics_keep_the_busiest_addresses_and_entries_and_sum_up_the_rest_from_the_real_counters(topo):
    fw(topo, "apply")
    elements = ["198.51.100.%d/32" % i for i in range(1, 6)] + ["203.0.113.0/24"]
    fw(topo, "replace", elements)
    # Exact counters put into the kernel's sets (out: og-allow4, in: og-allow4-in), as traffic would leave them.
    traffic = {"198.51.100.1": (1, 100, 2, 40), "198.51.100.2": (5, 5000, 40, 50000), "198.51.100.3": (0, 0, 0, 0),
               "198.51.100.4": (7, 700, 7, 700), "198.51.100.5": (1, 10, 2, 20), "203.0.113.0/24": (9, 900, 0, 0)}
    script = "".join("add og-allow4 %s packets %d bytes %d -exist\nadd og-allow4-in %s packets %d bytes %d -exist\n"
                     % (m, op, ob, m, ip, ib) for m, (op, ob, ip, ib) in traffic.items())
    topo.gw.run(["ipset", "restore"], input=script)
    names = {"198.51.100.1/32": ["a.example.com"], "198.51.100.2/32": ["a.example.com", "b.example.com"],
             "198.51.100.3/32": ["b.example.com"], "198.51.100.4/32": ["c.example.com"],
             "198.51.100.5/32": ["d.example.com"], "203.0.113.0/24": ["203.0.113.0/24"]}
    text = fw(topo, "metrics", {"elements": elements, "names": names,
                                "cfg": {"metrics_address_limit": 2, "metrics_entry_limit": 2}})
    # The two busiest by bytes both ways (.2: 55,000, .4: 1,400); the other four summed up as "other".
    assert metric_samples(text, "og_gateway_bytes_total") == {
        (("address", "198.51.100.2/32"), ("direction", "out")): 5000.0,
        (("address", "198.51.100.2/32"), ("direction", "in")): 50000.0,
        (("address", "198.51.100.4/32"), ("direction", "out")): 700.0,
        (("address", "198.51.100.4/32"), ("direction", "in")): 700.0,
        (("address", "other"), ("direction", "out")): 1010.0,
        (("address", "other"), ("direction", "in")): 60.0,
    }
    assert metric_samples(text, "iptables_packets_count") == {
        (("hostname", "gw1"), ("ip", "198.51.100.2"), ("type", "OUTPUT")): 5.0,
        (("hostname", "gw1"), ("ip", "198.51.100.2"), ("type", "INPUT")): 40.0,
        (("hostname", "gw1"), ("ip", "198.51.100.4"), ("type", "OUTPUT")): 7.0,
        (("hostname", "gw1"), ("ip", "198.51.100.4"), ("type", "INPUT")): 7.0,
        (("hostname", "gw1"), ("ip", "other"), ("type", "OUTPUT")): 11.0,
        (("hostname", "gw1"), ("ip", "other"), ("type", "INPUT")): 4.0,
    }
    assert metric_samples(text, "og_gateway_aggregated_addresses") == {(): 4.0}
    # Entries: the group a + b (.2) and c (.4) are the busiest; a, b, d and the network sum up as other/false.

    def entry(name, shared, direction):
        return ("direction", direction), ("entry", name), ("shared", shared)

    assert metric_samples(text, "og_gateway_entry_bytes_total") == {
        entry("a.example.com + b.example.com", "true", "out"): 5000.0,
        entry("a.example.com + b.example.com", "true", "in"): 50000.0,
        entry("c.example.com", "false", "out"): 700.0, entry("c.example.com", "false", "in"): 700.0,
        entry("other", "false", "out"): 1010.0, entry("other", "false", "in"): 60.0,
        entry("other", "true", "out"): 0.0, entry("other", "true", "in"): 0.0,
    }
    assert metric_samples(text, "og_gateway_aggregated_entries") == {(): 4.0}
    assert metric_samples(text, "og_gateway_allowed_elements") == {(): 6.0}
