"""og_firewall without a kernel: a fake runner answers with real ipset/iptables output and records commands."""

import pytest

from og_kernel import og_command
from og_kernel.og_command import CommandError, CommandRunner, Result, command_line, missing_binary_message
from og_kernel.og_elements import Element
from og_kernel.og_firewall import (
    Counters, EgressPolicy, Firewall, FirewallError, fold_elements, parse_headers, parse_save)

# Real output of ipset 7.17 / iptables 1.8.9 (nf_tables) after apply() with one allowed address.
HEADERS = """Name: og-allow4
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0x804390c9
Size in memory: 536
References: 1
Number of entries: 1

Name: og-allow4-in
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0xb751f119
Size in memory: 536
References: 1
Number of entries: 1

Name: og-allowp4
Type: hash:net,port
Revision: 8
Header: family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0x2562a472
Size in memory: 776
References: 1
Number of entries: 4

Name: og-allowp4-in
Type: hash:net,port
Revision: 8
Header: family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0xafb9ddcb
Size in memory: 776
References: 1
Number of entries: 4

Name: og-clients4
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x93aa9fa4
Size in memory: 504
References: 8
Number of entries: 1

Name: og-denied4
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 initval 0x3e20f72e
Size in memory: 216
References: 2
Number of entries: 0

Name: og-learn4
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 100000 timeout 3600 counters bucketsize 12 initval 0x1e20f72e
Size in memory: 216
References: 1
Number of entries: 0

Name: og-learnp4
Type: hash:ip,port
Revision: 7
Header: family inet hashsize 1024 maxelem 100000 timeout 3600 counters bucketsize 12 initval 0xded99e81
Size in memory: 216
References: 1
Number of entries: 0

Name: og-blocked4
Type: hash:ip,port,ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 initval 0x4e20f72e
Size in memory: 216
References: 2
Number of entries: 0

Name: og-observed4
Type: hash:ip,port,ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 initval 0x5e20f72e
Size in memory: 216
References: 0
Number of entries: 0

Name: og-perclient4
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 initval 0x6e20f72e
Size in memory: 216
References: 2
Number of entries: 0

Name: og-perclient4-in
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 initval 0x7e20f72e
Size in memory: 216
References: 2
Number of entries: 0
"""

OG_FORWARD = """-N OG-FORWARD
-A OG-FORWARD -o og-out -p tcp -m set --match-set og-clients4 src -m tcp --dport 853 -j OG-REJECT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -m set --match-set og-allowp4 dst,dst -j OG-ACCEPT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -m set --match-set og-allow4 dst -j OG-ACCEPT
-A OG-FORWARD -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set og-allowp4-in src,src -j OG-ACCEPT
-A OG-FORWARD -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set og-allow4-in src -j OG-ACCEPT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -m set --match-set og-learnp4 dst,dst -j OG-ACCEPT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -m set --match-set og-learn4 dst -j OG-ACCEPT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -m conntrack --ctstate RELATED,ESTABLISHED -j OG-ACCEPT
-A OG-FORWARD -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -j OG-ACCEPT
-A OG-FORWARD -o og-out -m set --match-set og-clients4 src -j OG-REJECT
"""  # noqa: E501

APPLIED = {
    ("ipset", "list", "-t"): HEADERS,
    ("ipset", "list", "-o", "save", "og-clients4"):
        "create og-clients4 hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x93aa9fa4\n"
        "add og-clients4 10.88.0.0/24\n",
    ("ipset", "list", "-o", "save", "og-allow4"):
        "create og-allow4 hash:net family inet hashsize 1024 maxelem 1048576 counters bucketsize 12\n"
        "add og-allow4 198.51.100.10 packets 7 bytes 420\n",
    ("ipset", "list", "-o", "save", "og-allow4-in"):
        "create og-allow4-in hash:net family inet hashsize 1024 maxelem 1048576 counters bucketsize 12\n"
        "add og-allow4-in 198.51.100.10 packets 9 bytes 30000\n",
    ("ipset", "list", "-o", "save", "og-allowp4"):
        "create og-allowp4 hash:net,port family inet hashsize 1024 maxelem 1048576 counters bucketsize 12\n"
        "add og-allowp4 198.51.100.0/24,tcp:8001 packets 1 bytes 60\n"
        "add og-allowp4 198.51.100.0/24,tcp:8000 packets 2 bytes 120\n"
        "add og-allowp4 198.51.100.0/24,tcp:8003 packets 0 bytes 0\n"
        "add og-allowp4 198.51.100.0/24,tcp:8002 packets 0 bytes 0\n",
    ("ipset", "list", "-o", "save", "og-allowp4-in"):
        "create og-allowp4-in hash:net,port family inet hashsize 1024 maxelem 1048576 counters bucketsize 12\n"
        "add og-allowp4-in 198.51.100.0/24,tcp:8001 packets 3 bytes 900\n"
        "add og-allowp4-in 198.51.100.0/24,tcp:8000 packets 0 bytes 0\n"
        "add og-allowp4-in 198.51.100.0/24,tcp:8003 packets 0 bytes 0\n"
        "add og-allowp4-in 198.51.100.0/24,tcp:8002 packets 0 bytes 0\n",
    ("iptables", "-t", "filter", "-S", "FORWARD"): "-P FORWARD DROP\n-A FORWARD -j OG-FORWARD\n",
    ("iptables", "-t", "filter", "-S", "OG-FORWARD"): OG_FORWARD,
    ("iptables", "-t", "filter", "-S", "OG-REJECT"):
        "-N OG-REJECT\n-A OG-REJECT -m conntrack --ctstate NEW -m set --match-set og-denied4 dst\n"
        "-A OG-REJECT -m conntrack --ctstate NEW -j SET --add-set og-denied4 dst\n"
        "-A OG-REJECT -m conntrack --ctstate NEW -m set --match-set og-blocked4 dst,dst,src\n"
        "-A OG-REJECT -m conntrack --ctstate NEW -j SET --add-set og-blocked4 dst,dst,src\n"
        "-A OG-REJECT -p tcp -j REJECT --reject-with tcp-reset\n"
        "-A OG-REJECT -j REJECT --reject-with icmp-admin-prohibited\n",
    ("iptables", "-t", "filter", "-S", "OG-ACCEPT"):
        "-N OG-ACCEPT\n-A OG-ACCEPT -o og-out -m set --match-set og-perclient4 src -j ACCEPT\n"
        "-A OG-ACCEPT -i og-out -m set --match-set og-perclient4-in dst -j ACCEPT\n"
        "-A OG-ACCEPT -o og-out -j SET --add-set og-perclient4 src\n"
        "-A OG-ACCEPT -i og-out -j SET --add-set og-perclient4-in dst\n"
        "-A OG-ACCEPT -j ACCEPT\n",
    ("iptables", "-t", "nat", "-S", "POSTROUTING"): "-P POSTROUTING ACCEPT\n-A POSTROUTING -j OG-POSTROUTING\n",
    ("iptables", "-t", "nat", "-S", "OG-POSTROUTING"):
        "-N OG-POSTROUTING\n-A OG-POSTROUTING -o og-out -m set --match-set og-clients4 src -j MASQUERADE\n",
}

EMPTY = {
    ("ipset", "list", "-t"): "",
    ("iptables", "-t", "filter", "-S", "FORWARD"): "-P FORWARD DROP\n-A FORWARD -s 192.0.2.0/24 -j ACCEPT\n",
    ("iptables", "-t", "nat", "-S", "POSTROUTING"): "-P POSTROUTING ACCEPT\n",
}

AFTER = """\
ipset og-allow4 hash:net family inet counters
ipset og-allow4-in hash:net family inet counters
ipset og-allowp4 hash:net,port family inet counters
ipset og-allowp4-in hash:net,port family inet counters
ipset og-blocked4 hash:ip,port,ip family inet timeout 3600 counters
ipset og-clients4 hash:net family inet: 10.88.0.0/24
ipset og-denied4 hash:ip family inet timeout 3600 counters
ipset og-learn4 hash:ip family inet timeout 3600 counters
ipset og-learnp4 hash:ip,port family inet timeout 3600 counters
ipset og-observed4 hash:ip,port,ip family inet timeout 3600 counters
ipset og-perclient4 hash:ip family inet timeout 3600 counters
ipset og-perclient4-in hash:ip family inet timeout 3600 counters
iptables -t filter FORWARD rule 1: -j OG-FORWARD
iptables -t filter OG-ACCEPT rule 1: -o og-out -m set --match-set og-perclient4 src -j ACCEPT
iptables -t filter OG-ACCEPT rule 2: -i og-out -m set --match-set og-perclient4-in dst -j ACCEPT
iptables -t filter OG-ACCEPT rule 3: -o og-out -j SET --add-set og-perclient4 src
iptables -t filter OG-ACCEPT rule 4: -i og-out -j SET --add-set og-perclient4-in dst
iptables -t filter OG-ACCEPT rule 5: -j ACCEPT
iptables -t filter OG-FORWARD rule 10: -o og-out -m set --match-set og-clients4 src -j OG-REJECT
iptables -t filter OG-FORWARD rule 1: -o og-out -p tcp -m set --match-set og-clients4 src -m tcp --dport 853 -j OG-REJECT
iptables -t filter OG-FORWARD rule 2: -o og-out -m set --match-set og-clients4 src -m set --match-set og-allowp4 dst,dst -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 3: -o og-out -m set --match-set og-clients4 src -m set --match-set og-allow4 dst -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 4: -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set og-allowp4-in src,src -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 5: -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -m set --match-set og-allow4-in src -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 6: -o og-out -m set --match-set og-clients4 src -m set --match-set og-learnp4 dst,dst -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 7: -o og-out -m set --match-set og-clients4 src -m set --match-set og-learn4 dst -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 8: -o og-out -m set --match-set og-clients4 src -m conntrack --ctstate RELATED,ESTABLISHED -j OG-ACCEPT
iptables -t filter OG-FORWARD rule 9: -i og-out -m set --match-set og-clients4 dst -m conntrack --ctstate RELATED,ESTABLISHED -j OG-ACCEPT
iptables -t filter OG-REJECT rule 1: -m conntrack --ctstate NEW -m set --match-set og-denied4 dst
iptables -t filter OG-REJECT rule 2: -m conntrack --ctstate NEW -j SET --add-set og-denied4 dst
iptables -t filter OG-REJECT rule 3: -m conntrack --ctstate NEW -m set --match-set og-blocked4 dst,dst,src
iptables -t filter OG-REJECT rule 4: -m conntrack --ctstate NEW -j SET --add-set og-blocked4 dst,dst,src
iptables -t filter OG-REJECT rule 5: -p tcp -j REJECT --reject-with tcp-reset
iptables -t filter OG-REJECT rule 6: -j REJECT --reject-with icmp-admin-prohibited
iptables -t filter chain OG-ACCEPT
iptables -t filter chain OG-FORWARD
iptables -t filter chain OG-REJECT
iptables -t nat OG-POSTROUTING rule 1: -o og-out -m set --match-set og-clients4 src -j MASQUERADE
iptables -t nat POSTROUTING rule 1: -j OG-POSTROUTING
iptables -t nat chain OG-POSTROUTING
"""  # noqa: E501


class FakeRunner:
    """Answers reads with canned output (rc 1 for unknown reads, like `iptables -S` of a missing chain); records calls."""

    def __init__(self, answers, missing=()):
        self.answers = dict(answers)
        self.missing = set(missing)
        self.calls = []

    def which(self, name):
        return None if name in self.missing else "/usr/sbin/" + name

    def __call__(self, argv, stdin=None, check=True):
        self.calls.append((list(argv), stdin))
        out = self.answers.get(tuple(argv))
        if out is not None:
            return Result(0, out, "")
        if "-S" in argv or argv[:2] == ["ipset", "list"]:
            return Result(1, "", "iptables: No chain/target/match by that name.\n")
        return Result(0, "", "")


@pytest.fixture(autouse=True)
def no_guard(monkeypatch):
    monkeypatch.delenv("OG_REFUSE_ROOT_NETNS", raising=False)


def firewall(answers, ipv6=False, clients=("10.88.0.0/24",), missing=()):
    runner = FakeRunner(answers, missing)
    return Firewall(EgressPolicy(list(clients), "og-out", ipv6=ipv6), runner=runner), runner


def test_plan_on_an_empty_host_creates_everything_in_dependency_order():
    fw, runner = firewall(EMPTY)
    plan = fw.plan()
    assert plan.changed is True
    assert [str(s) for s in plan.steps] == [
        "create ipsets og-allow4, og-allow4-in, og-allowp4, og-allowp4-in, og-denied4, og-learn4, og-learnp4, "
        "og-blocked4, og-observed4, og-perclient4, og-perclient4-in",
        "set og-clients4 to 10.88.0.0/24",
        "load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT",
        "load iptables nat: OG-POSTROUTING",
        "iptables: jump from FORWARD to OG-FORWARD at position 1",
        "iptables: jump from POSTROUTING to OG-POSTROUTING at position 1",
    ]
    assert plan.diff == {"before": "", "after": AFTER}
    assert plan.steps[0].commands == [(["ipset", "restore", "-exist"],
                                       "create og-allow4 hash:net family inet maxelem 1048576 counters\n"
                                       "create og-allow4-in hash:net family inet maxelem 1048576 counters\n"
                                       "create og-allowp4 hash:net,port family inet maxelem 1048576 counters\n"
                                       "create og-allowp4-in hash:net,port family inet maxelem 1048576 counters\n"
                                       "create og-denied4 hash:ip family inet maxelem 65536 timeout 3600 counters\n"
                                       "create og-learn4 hash:ip family inet maxelem 100000 timeout 3600 counters\n"
                                       "create og-learnp4 hash:ip,port family inet maxelem 100000 timeout 3600 "
                                       "counters\n"
                                       "create og-blocked4 hash:ip,port,ip family inet maxelem 65536 timeout 3600 "
                                       "counters\n"
                                       "create og-observed4 hash:ip,port,ip family inet maxelem 65536 timeout 3600 "
                                       "counters\n"
                                       "create og-perclient4 hash:ip family inet maxelem 65536 timeout 3600 counters\n"
                                       "create og-perclient4-in hash:ip family inet maxelem 65536 timeout 3600 "
                                       "counters\n")]
    assert plan.steps[1].commands == [(["ipset", "restore", "-exist"],
                                       "create og-clients4 hash:net family inet maxelem 1048576\n"
                                       "create og-clients4-t hash:net family inet maxelem 1048576\n"
                                       "flush og-clients4-t\n"
                                       "add og-clients4-t 10.88.0.0/24\n"
                                       "swap og-clients4-t og-clients4\n"
                                       "destroy og-clients4-t\n")]
    assert plan.steps[2].commands == [(["iptables-restore", "--noflush"],
                                       "*filter\n:OG-FORWARD - [0:0]\n:OG-REJECT - [0:0]\n:OG-ACCEPT - [0:0]\n"
                                       + OG_FORWARD.replace("-N OG-FORWARD\n", "")
                                       + "-A OG-REJECT -m conntrack --ctstate NEW -m set --match-set og-denied4 dst\n"
                                       "-A OG-REJECT -m conntrack --ctstate NEW -j SET --add-set og-denied4 dst\n"
                                       "-A OG-REJECT -m conntrack --ctstate NEW -m set --match-set og-blocked4 "
                                       "dst,dst,src\n"
                                       "-A OG-REJECT -m conntrack --ctstate NEW -j SET --add-set og-blocked4 "
                                       "dst,dst,src\n"
                                       "-A OG-REJECT -p tcp -j REJECT --reject-with tcp-reset\n"
                                       "-A OG-REJECT -j REJECT --reject-with icmp-admin-prohibited\n"
                                       + APPLIED[("iptables", "-t", "filter", "-S", "OG-ACCEPT")].replace(
                                           "-N OG-ACCEPT\n", "")
                                       + "COMMIT\n")]
    assert plan.steps[4].commands == [(["iptables", "-t", "filter", "-I", "FORWARD", "1", "-j", "OG-FORWARD"], None)]
    # Planning only reads.
    assert {tuple(c[0][:2]) for c in runner.calls} <= {("ipset", "list"), ("iptables", "-t")}
    assert all("-S" in c[0] for c in runner.calls if c[0][0] == "iptables")


def test_apply_runs_the_planned_commands_and_nothing_else():
    fw, runner = firewall(EMPTY)
    plan = fw.plan()
    runner.calls.clear()
    assert fw.apply(plan) is True
    assert runner.calls == [cmd for step in plan.steps for cmd in step.commands]


def test_plan_on_an_applied_host_is_empty_and_before_equals_after():
    fw, runner = firewall(APPLIED)
    plan = fw.plan()
    assert plan.changed is False
    assert plan.steps == []
    assert plan.before == plan.after == AFTER
    runner.calls.clear()
    assert fw.apply(plan) is False
    assert runner.calls == []


def test_a_misplaced_and_duplicated_jump_is_moved_to_the_top():
    answers = dict(APPLIED)
    answers[("iptables", "-t", "filter", "-S", "FORWARD")] = (
        "-P FORWARD DROP\n-A FORWARD -s 192.0.2.0/24 -j ACCEPT\n-A FORWARD -j OG-FORWARD\n-A FORWARD -j OG-FORWARD\n")
    fw, dummy = firewall(answers)
    plan = fw.plan()
    assert [str(s) for s in plan.steps] == ["iptables: jump from FORWARD to OG-FORWARD at position 1"]
    assert plan.steps[0].commands == [
        (["iptables", "-t", "filter", "-D", "FORWARD", "-j", "OG-FORWARD"], None),
        (["iptables", "-t", "filter", "-D", "FORWARD", "-j", "OG-FORWARD"], None),
        (["iptables", "-t", "filter", "-I", "FORWARD", "1", "-j", "OG-FORWARD"], None),
    ]
    assert "iptables -t filter FORWARD rule 2: -j OG-FORWARD\niptables -t filter FORWARD rule 3: -j OG-FORWARD\n" \
        in plan.before


def test_rules_in_another_order_or_a_foreign_rule_in_our_chain_reload_the_chain():
    answers = dict(APPLIED)
    rules = OG_FORWARD.splitlines()
    answers[("iptables", "-t", "filter", "-S", "OG-FORWARD")] = "\n".join([rules[0], rules[2], rules[1]] + rules[3:])
    fw, dummy = firewall(answers)
    assert [str(s) for s in fw.plan().steps] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    plan = fw.plan()
    assert plan.before != plan.after  # the rule numbers show the order in the sorted text
    answers[("iptables", "-t", "filter", "-S", "OG-FORWARD")] = OG_FORWARD + "-A OG-FORWARD -j ACCEPT\n"
    fw, dummy = firewall(answers)
    plan = fw.plan()
    assert [str(s) for s in plan.steps] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    assert "iptables -t filter OG-FORWARD rule 11: -j ACCEPT\n" in plan.before


def test_changed_client_networks_are_swapped_in():
    fw, dummy = firewall(APPLIED, clients=["10.88.0.0/24", "10.99.0.0/16"])
    plan = fw.plan()
    assert [str(s) for s in plan.steps] == ["set og-clients4 to 10.88.0.0/24 10.99.0.0/16"]
    # Masquerade and forward rules refer to the set, so only its members change.
    assert plan.after == AFTER.replace("10.88.0.0/24\n", "10.88.0.0/24 10.99.0.0/16\n")


def test_ipv6_uses_ip6tables_and_inet6_sets():
    fw, dummy = firewall(EMPTY, ipv6=True, clients=["10.88.0.0/24", "fd00:88::/64"])
    plan = fw.plan()
    assert [str(s) for s in plan.steps][6:] == [
        "create ipsets og-allow6, og-allow6-in, og-allowp6, og-allowp6-in, og-denied6, og-learn6, og-learnp6, "
        "og-blocked6, og-observed6, og-perclient6, og-perclient6-in",
        "set og-clients6 to fd00:88::/64",
        "load ip6tables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT",
        "load ip6tables nat: OG-POSTROUTING",
        "ip6tables: jump from FORWARD to OG-FORWARD at position 1",
        "ip6tables: jump from POSTROUTING to OG-POSTROUTING at position 1",
    ]
    assert plan.steps[6].commands[0][1].splitlines()[0] == \
        "create og-allow6 hash:net family inet6 maxelem 1048576 counters"
    assert "ip6tables -t filter OG-REJECT rule 6: -j REJECT --reject-with icmp6-adm-prohibited\n" in plan.after
    assert "ipset og-denied6 hash:ip family inet6 timeout 3600 counters\n" in plan.after
    assert "ipset og-learnp6 hash:ip,port family inet6 timeout 3600 counters\n" in plan.after
    assert ("ip6tables -t filter OG-FORWARD rule 1: -o og-out -p tcp -m set --match-set og-clients6 src -m tcp "
            "--dport 853 -j OG-REJECT\n") in plan.after
    assert plan.steps[8].commands[0][0] == ["ip6tables-restore", "--noflush"]


def test_parse_save_and_headers():
    saved = parse_save(APPLIED[("ipset", "list", "-o", "save", "og-allowp4")])
    assert saved == {"og-allowp4": {"198.51.100.0/24,tcp:8000": (2, 120), "198.51.100.0/24,tcp:8001": (1, 60),
                                    "198.51.100.0/24,tcp:8002": (0, 0), "198.51.100.0/24,tcp:8003": (0, 0)}}
    assert parse_save("create og-clients4 hash:net family inet\nadd og-clients4 10.88.0.0/24\n") == {
        "og-clients4": {"10.88.0.0/24": (0, 0)}}
    assert parse_save("create og-allow4 hash:net family inet counters\n") == {"og-allow4": {}}
    headers = parse_headers(HEADERS)
    assert sorted(headers) == ["og-allow4", "og-allow4-in", "og-allowp4", "og-allowp4-in", "og-blocked4",
                               "og-clients4", "og-denied4", "og-learn4", "og-learnp4", "og-observed4",
                               "og-perclient4", "og-perclient4-in"]
    assert headers["og-allowp4"] == (
        "hash:net,port", "family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0x2562a472")


def test_elements_fold_ports_into_ranges_and_counters_sum_them():
    fw, dummy = firewall(APPLIED)
    assert fw.elements() == {Element("198.51.100.10/32"), Element("198.51.100.0/24", "8000-8003/tcp")}
    # Two expected ranges that together cover the members are read back as asked.
    asked = [Element("198.51.100.0/24", "8000-8001/tcp"), Element("198.51.100.0/24", "8002-8003/tcp")]
    assert fw.elements(expected=asked) == {Element("198.51.100.10/32")} | set(asked)
    assert fw.counters() == {
        Element("198.51.100.10/32"): Counters(out_bytes=420, out_packets=7, in_bytes=30000, in_packets=9),
        Element("198.51.100.0/24", "8000-8003/tcp"): Counters(
            out_bytes=180, out_packets=3, in_bytes=900, in_packets=3),
    }
    assert fw.counters(asked)[asked[1]] == Counters()


def test_fold_elements_makes_maximal_runs():
    ported = {("198.51.100.10", "tcp", p) for p in (80, 443, 444, 445, 8080)} | {("198.51.100.10", "udp", 53)}
    assert fold_elements({"2001:db8::/64"}, ported) == {
        Element("2001:db8::/64"), Element("198.51.100.10/32", "80/tcp"), Element("198.51.100.10/32", "443-445/tcp"),
        Element("198.51.100.10/32", "8080/tcp"), Element("198.51.100.10/32", "53/udp")}
    # An expected range that is only partly there is not claimed.
    assert fold_elements(set(), ported, [Element("198.51.100.10/32", "443-446/tcp")]) == fold_elements(set(), ported)


def test_replace_builds_temporary_sets_swaps_them_in_and_keeps_counters():
    fw, runner = firewall(APPLIED)
    runner.calls.clear()
    skipped = fw.replace(["198.51.100.10/32", "203.0.113.0/24 8000-8001/tcp", "198.51.100.0/24 8000/tcp",
                          "10.1.2.3/32", "2001:db8::1/128"])
    assert skipped == [Element("10.1.2.3/32"), Element("2001:db8::1/128")]
    changes = [c for c in runner.calls if c[0][:2] != ["ipset", "list"]]
    assert changes == [(["ipset", "restore", "-exist"], """\
create og-allow4 hash:net family inet maxelem 1048576 counters
create og-allow4-t hash:net family inet maxelem 1048576 counters
flush og-allow4-t
add og-allow4-t 198.51.100.10
add og-allow4-t 198.51.100.10 packets 7 bytes 420
swap og-allow4-t og-allow4
destroy og-allow4-t
create og-allow4-in hash:net family inet maxelem 1048576 counters
create og-allow4-in-t hash:net family inet maxelem 1048576 counters
flush og-allow4-in-t
add og-allow4-in-t 198.51.100.10
add og-allow4-in-t 198.51.100.10 packets 9 bytes 30000
swap og-allow4-in-t og-allow4-in
destroy og-allow4-in-t
create og-allowp4 hash:net,port family inet maxelem 1048576 counters
create og-allowp4-t hash:net,port family inet maxelem 1048576 counters
flush og-allowp4-t
add og-allowp4-t 203.0.113.0/24,tcp:8000-8001
add og-allowp4-t 198.51.100.0/24,tcp:8000
add og-allowp4-t 198.51.100.0/24,tcp:8000 packets 2 bytes 120
swap og-allowp4-t og-allowp4
destroy og-allowp4-t
create og-allowp4-in hash:net,port family inet maxelem 1048576 counters
create og-allowp4-in-t hash:net,port family inet maxelem 1048576 counters
flush og-allowp4-in-t
add og-allowp4-in-t 203.0.113.0/24,tcp:8000-8001
add og-allowp4-in-t 198.51.100.0/24,tcp:8000
swap og-allowp4-in-t og-allowp4-in
destroy og-allowp4-in-t
""")]


def test_update_is_one_restore_batch_removing_first():
    fw, runner = firewall(APPLIED)
    runner.calls.clear()
    skipped = fw.update(add=["198.51.100.20", "203.0.113.0/24 8000-8100/tcp", "192.168.1.0/24"],
                        remove=["198.51.100.10/32", "2001:db8::/64"])
    assert skipped == [Element("192.168.1.0/24")]
    assert runner.calls == [(["ipset", "restore", "-exist"], """\
create og-allow4 hash:net family inet maxelem 1048576 counters
create og-allow4-in hash:net family inet maxelem 1048576 counters
create og-allowp4 hash:net,port family inet maxelem 1048576 counters
create og-allowp4-in hash:net,port family inet maxelem 1048576 counters
del og-allow4 198.51.100.10
del og-allow4-in 198.51.100.10
add og-allow4 198.51.100.20
add og-allow4-in 198.51.100.20
add og-allowp4 203.0.113.0/24,tcp:8000-8100
add og-allowp4-in 203.0.113.0/24,tcp:8000-8100
""")]
    runner.calls.clear()
    assert fw.update(add=["127.0.0.1"]) == [Element("127.0.0.1/32")]
    assert runner.calls == []


def test_remove_deletes_only_owned_objects_in_order():
    answers = dict(APPLIED)
    answers[("ipset", "list", "-t")] = HEADERS + "\nName: og-allow4-t\nType: hash:net\nHeader: family inet counters\n"
    fw, runner = firewall(answers)
    runner.calls.clear()
    assert fw.remove() is True
    changes = [c[0] for c in runner.calls if "-S" not in c[0] and c[0][:2] != ["ipset", "list"]]
    assert changes == [
        ["iptables", "-t", "filter", "-D", "FORWARD", "-j", "OG-FORWARD"],
        ["iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "OG-POSTROUTING"],
        ["iptables", "-t", "filter", "-F", "OG-FORWARD"],
        ["iptables", "-t", "filter", "-F", "OG-REJECT"],
        ["iptables", "-t", "filter", "-F", "OG-ACCEPT"],
        ["iptables", "-t", "nat", "-F", "OG-POSTROUTING"],
        ["iptables", "-t", "filter", "-X", "OG-FORWARD"],
        ["iptables", "-t", "filter", "-X", "OG-REJECT"],
        ["iptables", "-t", "filter", "-X", "OG-ACCEPT"],
        ["iptables", "-t", "nat", "-X", "OG-POSTROUTING"],
        ["ipset", "destroy", "og-clients4"],
        ["ipset", "destroy", "og-allow4"],
        ["ipset", "destroy", "og-allow4-t"],
        ["ipset", "destroy", "og-allow4-in"],
        ["ipset", "destroy", "og-allowp4"],
        ["ipset", "destroy", "og-allowp4-in"],
        ["ipset", "destroy", "og-denied4"],
        ["ipset", "destroy", "og-learn4"],
        ["ipset", "destroy", "og-learnp4"],
        ["ipset", "destroy", "og-blocked4"],
        ["ipset", "destroy", "og-observed4"],
        ["ipset", "destroy", "og-perclient4"],
        ["ipset", "destroy", "og-perclient4-in"],
    ]
    fw, runner = firewall(EMPTY)
    assert fw.remove() is False
    assert [c for c in runner.calls if "-S" not in c[0] and c[0][:2] != ["ipset", "list"]] == []


def test_preflight_names_a_missing_binary_and_its_package():
    fw, dummy = firewall(EMPTY, missing=["ipset"])
    with pytest.raises(FirewallError) as exc:
        fw.preflight()
    assert exc.value.msg == "ipset is missing. Is the package ipset installed?"
    fw, dummy = firewall(EMPTY, ipv6=True, missing=["ip6tables-restore"])
    with pytest.raises(FirewallError) as exc:
        fw.preflight()
    assert exc.value.msg == "ip6tables-restore is missing. Is the package iptables installed?"


def test_preflight_names_a_missing_outside_interface(tmp_path, monkeypatch):
    (tmp_path / "lo").mkdir()
    (tmp_path / "eth0").mkdir()
    monkeypatch.setattr(Firewall, "sys_class_net", str(tmp_path))
    fw, dummy = firewall(EMPTY)
    with pytest.raises(FirewallError) as exc:
        fw.preflight()
    assert exc.value.msg == ("outside interface 'og-out' does not exist on this host (interfaces: eth0, lo); set "
                             "outside_interface to the interface that leads to the internet")
    (tmp_path / "og-out").mkdir()
    fw.preflight()


@pytest.mark.parametrize("clients, message", [
    ([], "no client networks given: list the networks whose egress this gateway controls "
         "(client_networks, e.g. 10.88.0.0/24)"),
    (["10.88.0.0/33"], "client network '10.88.0.0/33' is not an IPv4/IPv6 network in CIDR notation; "
                       "write it like 10.88.0.0/24"),
    (["lan"], "client network 'lan' is not an IPv4/IPv6 network in CIDR notation; write it like 10.88.0.0/24"),
    (["10.88.0.1/24"], "client network '10.88.0.1/24' has host bits set; did you mean 10.88.0.0/24?"),
    (["0.0.0.0/0"], "client network 0.0.0.0/0 would make every address a client; list the client networks "
                    "themselves"),
    (["fd00:88::/64"], "client network fd00:88::/64 is IPv6 but ipv6 is off: enable ipv6 or remove it"),
])
def test_preflight_refuses_invalid_client_networks(clients, message, tmp_path, monkeypatch):
    (tmp_path / "og-out").mkdir()
    monkeypatch.setattr(Firewall, "sys_class_net", str(tmp_path))
    fw, runner = firewall(EMPTY, clients=clients)
    with pytest.raises(FirewallError) as exc:
        fw.preflight()
    assert exc.value.msg == message
    with pytest.raises(FirewallError):
        fw.plan()


def test_preflight_and_plan_refuse_a_set_of_another_type_in_the_way(tmp_path, monkeypatch):
    (tmp_path / "og-out").mkdir()
    monkeypatch.setattr(Firewall, "sys_class_net", str(tmp_path))
    answers = dict(EMPTY)
    answers[("ipset", "list", "-t")] = "Name: og-allow4\nType: hash:ip\nHeader: family inet hashsize 1024\n"
    fw, runner = firewall(answers)
    message = ("ipset og-allow4 exists as hash:ip (family inet hashsize 1024) but must be hash:net family inet "
               "with counters; it is in the way: remove it with `ipset destroy og-allow4` (after removing the "
               "rules that use it)")
    with pytest.raises(FirewallError) as exc:
        fw.preflight()
    assert exc.value.msg == message
    with pytest.raises(FirewallError) as exc:
        fw.apply()
    assert exc.value.msg == message
    # A set without counters is in the way too: counters could never be read from it.
    answers[("ipset", "list", "-t")] = "Name: og-allow4-in\nType: hash:net\nHeader: family inet hashsize 1024\n"
    fw, runner = firewall(answers)
    with pytest.raises(FirewallError, match="ipset og-allow4-in exists as hash:net"):
        fw.plan()
    assert [c for c in runner.calls if c[0][:2] != ["ipset", "list"] and "-S" not in c[0]] == []


def test_the_root_namespace_guard_refuses_before_any_command(monkeypatch):
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    monkeypatch.setattr(og_command, "in_root_netns", lambda: True)
    fw, runner = firewall(EMPTY)
    for call in (fw.apply, fw.remove, lambda: fw.replace(["198.51.100.10"]), lambda: fw.update(add=["198.51.100.10"])):
        with pytest.raises(FirewallError, match="refusing to change iptables rules and ipsets in the machine's root"):
            call()
    assert runner.calls == []
    # Reading is allowed, and so is changing inside a namespace.
    assert fw.plan().changed is True
    monkeypatch.setattr(og_command, "in_root_netns", lambda: False)
    assert fw.apply() is True


def test_command_line_always_waits_for_the_xtables_lock():
    assert command_line(["iptables", "-t", "nat", "-S"]) == ["iptables", "-w", "-t", "nat", "-S"]
    assert command_line(["ip6tables-restore", "--noflush"]) == ["ip6tables-restore", "-w", "--noflush"]
    assert command_line(["iptables", "-w", "-S"]) == ["iptables", "-w", "-S"]
    assert command_line(["ipset", "list", "-t"]) == ["ipset", "list", "-t"]


def test_runner_errors_carry_everything_and_name_the_package():
    run = CommandRunner()
    assert run(["sh", "-c", "echo $LC_ALL"]).stdout == "C\n"
    with pytest.raises(CommandError) as exc:
        run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (exc.value.cmd, exc.value.rc, exc.value.stdout, exc.value.stderr) == (
        ["sh", "-c", "echo out; echo err >&2; exit 3"], 3, "out\n", "err\n")
    assert exc.value.msg == "sh -c echo out; echo err >&2; exit 3 failed (rc=3): err"
    assert run(["sh", "-c", "exit 4"], check=False).rc == 4
    with pytest.raises(CommandError) as exc:
        run(["og-no-such-tool", "x"])
    assert (exc.value.msg, exc.value.rc) == ("og-no-such-tool is missing. Is the package og-no-such-tool installed?",
                                             127)
    assert missing_binary_message("ipset") == "ipset is missing. Is the package ipset installed?"
    assert missing_binary_message("ip6tables") == "ip6tables is missing. Is the package iptables installed?"


def test_parse_save_reads_members_with_a_timeout():
    saved = ("create og-denied4 hash:ip family inet hashsize 1024 maxelem 65536 timeout 3600 counters bucketsize 12 "
             "initval 0x3e20f72e\n"
             "add og-denied4 198.51.100.20 timeout 3412 packets 3 bytes 180\n"
             "add og-denied4 203.0.113.9 timeout 12 packets 1 bytes 60\n")
    assert parse_save(saved) == {"og-denied4": {"198.51.100.20": (3, 180), "203.0.113.9": (1, 60)}}


def test_denied_reads_the_denied_sets_and_rejected_only_the_reject_rules():
    answers = dict(APPLIED)
    answers[("ipset", "list", "-o", "save", "og-denied4")] = (
        "create og-denied4 hash:ip family inet hashsize 1024 maxelem 65536 timeout 3600 counters\n"
        "add og-denied4 198.51.100.20 timeout 3599 packets 3 bytes 180\n")
    # Real `iptables -L OG-REJECT -v -x -n` after three refused SYNs to one destination.
    answers[("iptables", "-t", "filter", "-L", "OG-REJECT", "-v", "-x", "-n")] = """\
Chain OG-REJECT (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       2      120            0    --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate NEW match-set og-denied4 dst
       3      180 SET        0    --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate NEW add-set og-denied4 dst
       3      180 REJECT     6    --  *      *       0.0.0.0/0            0.0.0.0/0            reject-with tcp-reset
       0        0 REJECT     0    --  *      *       0.0.0.0/0            0.0.0.0/0            reject-with icmp-admin-prohibited
"""  # noqa: E501
    fw, runner = firewall(answers)
    assert fw.denied() == {"198.51.100.20": (3, 180)}
    assert fw.rejected() == (3, 180)
    fw, runner = firewall(EMPTY)
    assert fw.denied() == {}  # before apply: no set, nothing denied


def test_blocked_reads_both_sets_with_the_age_of_each_first_attempt():
    answers = dict(APPLIED)
    answers[("ipset", "list", "-o", "save", "og-blocked4")] = (
        "create og-blocked4 hash:ip,port,ip family inet hashsize 1024 maxelem 65536 timeout 3600 counters\n"
        "add og-blocked4 198.51.100.20,tcp:80,10.88.0.2 timeout 3590 packets 3 bytes 180\n"
        "add og-blocked4 203.0.113.9,icmp:echo-request,10.88.0.3 timeout 12 packets 1 bytes 84\n")
    answers[("ipset", "list", "-o", "save", "og-observed4")] = (
        "create og-observed4 hash:ip,port,ip family inet hashsize 1024 maxelem 65536 timeout 3600 counters\n"
        "add og-observed4 198.51.100.30,udp:53,10.88.0.2 timeout 3600 packets 1 bytes 70\n")
    fw, runner = firewall(answers)
    assert sorted(a.as_dict()["destination"] + " " + str(a) for a in fw.blocked()) == [
        "198.51.100.20 ('10.88.0.2', '198.51.100.20', 'tcp', '80', 3, 180, 10, False)",
        "198.51.100.30 ('10.88.0.2', '198.51.100.30', 'udp', '53', 1, 70, 0, True)",
        "203.0.113.9 ('10.88.0.3', '203.0.113.9', 'icmp', 'echo-request', 1, 84, 3588, False)",
    ]
    assert fw.blocked()[0].key == ("10.88.0.2", "198.51.100.20", "tcp", "80", False)
    fw, runner = firewall(EMPTY)
    assert fw.blocked() == []  # before apply: no sets, nothing recorded


def test_a_bad_mode_is_refused_by_name():
    with pytest.raises(FirewallError) as exc:
        EgressPolicy(["10.88.0.0/24"], "og-out", mode="Observe").check()
    assert "gateway mode 'Observe' is not one of enforce, observe" in exc.value.msg


def test_observe_mode_only_reloads_the_reject_chain():
    fw = Firewall(EgressPolicy(["10.88.0.0/24"], "og-out", mode="observe"), runner=FakeRunner(APPLIED))
    plan = fw.plan()
    assert [str(s) for s in plan.steps] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    assert ("iptables -t filter OG-REJECT rule 3: -m conntrack --ctstate NEW -j OG-ACCEPT\n") in plan.after
    assert "og-denied4 dst\n" not in plan.after.split("OG-REJECT rule 1:")[1].split("\n")[0]


def test_a_denied_set_without_timeout_is_in_the_way():
    answers = dict(APPLIED)
    answers[("ipset", "list", "-t")] = HEADERS.replace(" timeout 3600 counters", " counters")
    fw, runner = firewall(answers)
    with pytest.raises(FirewallError) as exc:
        fw.plan()
    assert exc.value.msg.startswith("ipset og-denied4 exists as hash:ip (family inet hashsize 1024 maxelem 65536 "
                                    "counters ")
    assert exc.value.msg.endswith(") but must be hash:ip family inet timeout 3600 with counters; it is in the way: "
                                  "remove it with `ipset destroy og-denied4` (after removing the rules that use it)")


def test_allow_dns_over_tls_drops_the_dot_rule_and_only_reloads_the_filter_chains():
    runner = FakeRunner(APPLIED)
    fw = Firewall(EgressPolicy(["10.88.0.0/24"], "og-out", allow_dns_over_tls=True), runner=runner)
    plan = fw.plan()
    assert [str(s) for s in plan.steps] == ["load iptables filter: OG-FORWARD, OG-REJECT, OG-ACCEPT"]
    assert "--dport 853" not in plan.after and "--dport 853" in plan.before
    assert plan.steps[0].commands[0][1].count("-A OG-FORWARD ") == 9
    assert EgressPolicy(["10.88.0.0/24"], "og-out").allow_dns_over_tls is False


def test_replace_and_update_never_touch_the_learn_sets():
    fw, runner = firewall(APPLIED)
    runner.calls.clear()
    fw.replace(["198.51.100.10", "203.0.113.0/24 443/tcp"])
    fw.update(add=["198.51.100.11"], remove=["198.51.100.10"])
    batches = "".join(stdin or "" for _argv, stdin in runner.calls)
    assert "og-allow4" in batches and "og-learn" not in batches


# Real output of `ipset -` listing the two per-client sets (ipset 7.17): each answer after the prompt.
CLIENTS_LISTING = (
    "ipset> create og-perclient4 hash:ip family inet hashsize 1024 maxelem 2 timeout 3600 counters bucketsize 12 "
    "initval 0x6e20f72e\n"
    "add og-perclient4 10.88.0.3 timeout 3590 packets 5 bytes 50300 \n"
    "add og-perclient4 10.88.0.2 timeout 3000 packets 7 bytes 420\n"
    "ipset> create og-perclient4-in hash:ip family inet hashsize 1024 maxelem 65536 timeout 3600 counters "
    "bucketsize 12 initval 0x7e20f72e\n"
    "add og-perclient4-in 10.88.0.2 timeout 3599 packets 9 bytes 300000\n"
    "ipset> ")


def test_client_counters_read_both_directions_in_one_run_and_name_full_sets():
    answers = dict(APPLIED)
    answers[("ipset", "-")] = CLIENTS_LISTING
    fw, runner = firewall(answers)
    rows, full = fw.client_counters()
    assert [r.as_dict() for r in rows] == [
        {"client": "10.88.0.2", "out_bytes": 420, "out_packets": 7, "in_bytes": 300000, "in_packets": 9,
         "out_age": 600, "in_age": 1},
        {"client": "10.88.0.3", "out_bytes": 50300, "out_packets": 5, "in_bytes": 0, "in_packets": 0,
         "out_age": 10, "in_age": None},
    ]
    assert full == ["og-perclient4"]
    assert [c for c in runner.calls if c[0] == ["ipset", "-"]] == [
        (["ipset", "-"], "list -o save og-perclient4\nlist -o save og-perclient4-in\n")]
    # Before apply() the sets are not there: nothing is listed (a missing set would end the listing).
    fw, runner = firewall(EMPTY)
    assert fw.client_counters() == ([], [])
    assert [c for c in runner.calls if c[0] == ["ipset", "-"]] == []
