"""og_learn.LearnSets against real learn sets in a namespace: netlink adds, refreshes, and the errors.

The sets are created exactly as the firewall policy creates them (og_firewall Family.learn_sets); what the kernel
holds is read back with the ipset tool, independently of LearnSets.members().
"""

import json
import os
import sys

import pytest

from og_kernel.og_firewall import Family
from og_kernel.og_learn import LearnSets
from tests.support import TOP, nslib

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

# Inside the namespace: open LearnSets (the process is already in the namespace), run the ops, print JSON.
LEARN = """
import json, subprocess, sys
from og_kernel.og_learn import LearnError, LearnSets
ipv6, ops = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
try:
    sets = LearnSets(ipv6=ipv6)
    for op, arg in ops:
        try:
            if op == "ipset":  # the set changes under the open socket
                out.append(subprocess.run(["ipset"] + arg, check=True).returncode)
            else:
                out.append(sets.add([tuple(i) for i in arg]) if op == "add" else sets.members())
        except LearnError as exc:
            out.append({"error": exc.msg})
    sets.close()
except LearnError as exc:
    out.append({"error": exc.msg})
print(json.dumps(out))
"""


@pytest.fixture
def ns(netns_factory):
    return netns_factory("lrn")


def create(ns, versions=(4,), skip=()):
    lines = [s.create_line() for v in versions for s in Family(v).learn_sets if s.name not in skip]
    ns.run(["ipset", "restore", "-exist"], input="".join(line + "\n" for line in lines))


def learn(ns, ops, ipv6=False):
    env = dict(os.environ, PYTHONPATH=TOP)
    return json.loads(ns.run([sys.executable, "-c", LEARN, json.dumps(ipv6), json.dumps(ops)], env=env).stdout)


def saved(ns, name):
    """{member: (timeout, packets, bytes)} as `ipset save` prints the set."""
    result = {}
    for line in ns.run(["ipset", "list", "-o", "save", name]).stdout.splitlines():
        words = line.split()
        if words[0] == "add":
            result[words[2]] = tuple(int(words[words.index(k) + 1]) for k in ("timeout", "packets", "bytes"))
    return result


def test_adds_addresses_and_ports_with_their_own_timeouts(ns):
    create(ns)
    got = learn(ns, [["add", [["198.51.100.10", None, 300], ["198.51.100.11", "443/tcp", 600],
                              ["198.51.100.12", "8000-8002/tcp", 900], ["198.51.100.12", "53/udp", 900]]],
                     ["members", None]])
    assert got[0] == 4
    assert sorted(saved(ns, "og-learn4")) == ["198.51.100.10"]
    assert 290 < saved(ns, "og-learn4")["198.51.100.10"][0] <= 300
    ports = saved(ns, "og-learnp4")
    assert sorted(ports) == ["198.51.100.11,tcp:443", "198.51.100.12,tcp:8000", "198.51.100.12,tcp:8001",
                             "198.51.100.12,tcp:8002", "198.51.100.12,udp:53"]
    assert 590 < ports["198.51.100.11,tcp:443"][0] <= 600 and 890 < ports["198.51.100.12,tcp:8001"][0] <= 900
    # members() reads the same through netlink.
    members = got[1]
    assert sorted(members) == ["og-learn4", "og-learnp4"]
    assert sorted(members["og-learnp4"]) == sorted(ports)
    assert 290 < members["og-learn4"]["198.51.100.10"] <= 300


def test_a_refresh_raises_the_timeout_and_keeps_the_counters(ns):
    create(ns)
    ns.run(["ipset", "add", "og-learn4", "198.51.100.10", "timeout", "60", "packets", "5", "bytes", "300"])
    ns.run(["ipset", "add", "og-learnp4", "198.51.100.10,tcp:443", "timeout", "60", "packets", "7", "bytes", "900"])
    assert learn(ns, [["add", [["198.51.100.10", None, 3000], ["198.51.100.10", "443/tcp", 3000]]]]) == [2]
    timeout, packets, bytes_ = saved(ns, "og-learn4")["198.51.100.10"]
    assert 2900 < timeout <= 3000 and (packets, bytes_) == (5, 300)
    timeout, packets, bytes_ = saved(ns, "og-learnp4")["198.51.100.10,tcp:443"]
    assert 2900 < timeout <= 3000 and (packets, bytes_) == (7, 900)


def test_ipv6_when_enabled_and_a_disabled_family_is_skipped(ns):
    create(ns, versions=(4, 6))
    items = [["2001:db8::10", None, 300], ["2001:db8::11", "443/tcp", 300], ["198.51.100.10", None, 300]]
    assert learn(ns, [["add", items]], ipv6=True) == [3]
    assert sorted(saved(ns, "og-learn6")) == ["2001:db8::10"]
    assert sorted(saved(ns, "og-learnp6")) == ["2001:db8::11,tcp:443"]
    ns.run(["ipset", "flush", "og-learn6"])
    ns.run(["ipset", "flush", "og-learnp6"])
    ns.run(["ipset", "flush", "og-learn4"])
    # IPv6 off: the IPv6 addresses are not added (nor counted), the IPv4 one is.
    assert learn(ns, [["add", items]], ipv6=False) == [1]
    assert saved(ns, "og-learn6") == {} and saved(ns, "og-learnp6") == {}
    assert sorted(saved(ns, "og-learn4")) == ["198.51.100.10"]


def test_a_missing_set_is_named_with_the_fix(ns):
    create(ns, skip=("og-learnp4",))
    assert learn(ns, []) == [{"error": "ipset og-learnp4 does not exist in this network namespace: apply the "
                                       "gateway policy first (og_iptables_allow or the gateway agent create it)"}]
    create(ns)
    assert "ipset og-learn6 does not exist" in learn(ns, [], ipv6=True)[0]["error"]
    # Gone after LearnSets was opened: the add names the set, the member and the fix.
    ops = [["add", [["198.51.100.10", None, 60]]], ["ipset", ["destroy", "og-learn4"]],
           ["add", [["198.51.100.10", None, 60]]]]
    assert learn(ns, ops) == [1, 0, {"error": "ipset og-learn4 is gone (adding 198.51.100.10): re-apply the gateway "
                                              "policy, which creates it"}]


def test_bad_values_are_named(ns):
    create(ns)
    got = learn(ns, [["add", [["198.51.100.300", None, 60]]], ["add", [["198.51.100.10", "443/icmp", 60]]],
                     ["add", [["198.51.100.0/24", None, 60]]]])
    assert got[0] == {"error": "address '198.51.100.300' is not an IPv4 or IPv6 address; a learn set holds single "
                               "addresses"}
    assert got[1]["error"].startswith("learned port '443/icmp' is not of the form '443/tcp' or '8000-8010/tcp'")
    assert "'198.51.100.0/24' is not an IPv4 or IPv6 address" in got[2]["error"]
    assert saved(ns, "og-learn4") == {} and saved(ns, "og-learnp4") == {}


def test_a_full_set_is_named_with_the_fix(ns):
    ns.run(["ipset", "create", "og-learn4", "hash:ip", "timeout", "3600", "counters", "maxelem", "1"])
    create(ns, skip=("og-learn4",))
    got = learn(ns, [["add", [["198.51.100.10", None, 60]]], ["add", [["198.51.100.11", None, 60]]],
                     ["add", [["198.51.100.10", None, 90]]]])
    assert got[0] == 1 and got[2] == 1  # a refresh of a member that is there still works in a full set
    assert got[1] == {"error": "ipset og-learn4 is full (adding 198.51.100.11): its maxelem is the gateway cap; "
                               "lower the names' TTLs or raise the cap"}
    assert sorted(saved(ns, "og-learn4")) == ["198.51.100.10"]


def test_a_thread_that_entered_the_namespace_fills_that_namespaces_sets(ns):
    """og-dns may enter the gateway's namespace with setns itself: the socket opened after it is the namespace's."""
    create(ns)

    def fill():
        with LearnSets() as sets:
            return sets.add([("198.51.100.10", None, 60), ("198.51.100.10", "443/tcp", 60)])

    # Were the socket the machine's, the sets would be missing there (LearnError) and nothing would change.
    assert nslib.in_netns(ns.name, fill) == 2
    assert sorted(saved(ns, "og-learn4")) == ["198.51.100.10"]
    assert sorted(saved(ns, "og-learnp4")) == ["198.51.100.10,tcp:443"]
