"""og-dns's pure parts: matching, settings, the spool's rules (no network)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import dns.message
import dns.rrset
import pytest

from gateway_agent.dns.config import Config, ConfigError, split_hostport
from gateway_agent.dns.forwarder import Forwarder, chain_of
from gateway_agent.dns.learner import Learner
from gateway_agent.dns.matcher import DomainsError, Matcher
from gateway_agent.dns.metrics import Metrics
from gateway_agent.dns.spool import Spool, spool_files
from og_kernel import og_protocol
from og_kernel.og_learn import LearnError
from tests.support import BIN, dnsauth
from tests.unit.test_netpolicy import MATCH_CASES


def test_exact_and_wildcard_matching():
    m = Matcher([{"entry": 1, "name": "Example.com.", "ports": []},
                 {"entry": 2, "name": "*.example.com", "ports": ["443/tcp"]}])
    assert [found[0] for found in m.match("EXAMPLE.COM")] == [1]
    assert [found[0] for found in m.match("a.example.com.")] == [2]
    assert [found[0] for found in m.match("a.b.example.com")] == [2]
    assert m.match("badexample.com") == [] and m.match("com") == [] and m.match("example.org") == []


@pytest.mark.parametrize("name", ["a.*.b", "**.x", "*x.com", "*.*.x", "*.", ""])
def test_malformed_domains_are_refused(name):
    with pytest.raises(DomainsError):
        Matcher([{"entry": 1, "name": name}])


def test_settings_are_checked():
    cfg = Config({"upstreams": ["192.0.2.53", "192.0.2.54:5353", "[2001:db8::53]:53"]})
    assert cfg.upstreams == [("192.0.2.53", 53), ("192.0.2.54", 5353), ("2001:db8::53", 53)]
    assert (cfg.min_ttl, cfg.max_ttl, cfg.grace, cfg.name_cap, cfg.gateway_cap) == (5, 3600, 900, 64, 100000)
    assert cfg.metrics_listen == ("0.0.0.0", 9901) and cfg.unlisted == "forward"
    for bad in ({}, {"upstreams": ["x"]}, {"upstreams": ["192.0.2.1"], "unlisted": "drop"},
                {"upstreams": ["192.0.2.1"], "min_ttl": 10, "max_ttl": 5}, {"upstreams": ["192.0.2.1"], "typo": 1},
                {"upstreams": ["192.0.2.1"], "internal_networks": ["nonsense"]}):
        with pytest.raises(ConfigError):
            Config(bad)
    assert split_hostport("2001:db8::1", 53, "x") == ("2001:db8::1", 53)


def test_cname_chain():
    response = dns.message.from_text(
        "id 1\nflags QR\n;QUESTION\na.test. IN A\n;ANSWER\na.test. 30 IN CNAME b.test.\n"
        "b.test. 30 IN CNAME c.test.\nc.test. 20 IN A 192.0.2.7\nother.test. 20 IN A 192.0.2.8\n")
    assert chain_of("a.test", response) == (["a.test", "b.test", "c.test"], [("192.0.2.7", 20)])


def test_spool_reports_moves_of_a_minute_and_bounds_its_files(tmp_path):
    spool = Spool(str(tmp_path), "gw", max_files=2)
    assert spool.flush(now=1000.0) is None
    spool.note_learned(1, "a.test", "192.0.2.1", [], 30, 2000, now=1000)
    first = spool.flush(now=1000.0)
    assert json.load(open(first))["learned"][0]["expires"] == 2000
    spool.note_learned(1, "a.test", "192.0.2.1", [], 30, 2059, now=1029)
    assert spool.flush(now=1029.0) is None
    spool.note_learned(1, "a.test", "192.0.2.1", [], 30, 2060, now=1030)
    spool.note_unlisted("x.test", 1030)
    spool.note_cap(1, "a.test", "name")
    assert spool.flush(now=1030.0) is not None
    spool.note_unlisted("y.test", 1031)
    spool.flush(now=1031.0)
    names = sorted(os.listdir(str(tmp_path)))
    assert len(names) == 2 and os.path.basename(first) not in names


def test_og_dns_exits_2_naming_the_bad_setting(tmp_path):
    path = tmp_path / "dns.yml"
    path.write_text("upstreams: [192.0.2.53]\nunlisted: drop\n")
    done = subprocess.run([os.path.join(BIN, "og-dns"), "--config", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "unlisted must be forward or refuse" in done.stderr, done.stderr
    done = subprocess.run([os.path.join(BIN, "og-dns"), "--upstream", "nonsense"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "upstream 'nonsense'" in done.stderr, done.stderr


def test_dnsauth_random_pool_answers_a_fresh_sample_per_query_and_rotation_stays_as_it_was():
    """tests/support/dnsauth.py's "random" pool (bench/dns_vs_central.py's CDN name): n distinct members of the
    pool per query, drawn anew each time; without "random" the pool still rotates one step per query."""
    pool = ["192.0.2.%d" % n for n in range(8)]
    seen, answers = set(), set()
    for dummy in range(400):
        picked = dnsauth.values_of("cdn.test", "A", {"pool": pool, "pick": 2, "random": True})
        assert len(picked) == 2 and len(set(picked)) == 2 and set(picked) <= set(pool)
        seen |= set(picked)
        answers.add(tuple(sorted(picked)))
    # 400 draws of 2 out of 8: every member turns up, and many different pairs (28 exist).
    assert seen == set(pool) and len(answers) > 10
    spec = {"pool": pool, "pick": 2}
    assert [dnsauth.values_of("rot.units.test", "A", spec) for dummy in range(3)] == [pool[0:2], pool[1:3], pool[2:4]]


@pytest.mark.parametrize("pattern, name, expected", MATCH_CASES)
def test_the_matcher_agrees_with_og_netpolicy_matches(pattern, name, expected):
    """og-dns's indexed Matcher decides as og_netpolicy.matches, which the server applies to learned names."""
    matcher = Matcher([{"entry": 1, "name": pattern, "ports": []}])
    assert bool(matcher.match(name)) is expected


def test_an_address_answered_for_two_names_keeps_the_longer_kernel_timeout(tmp_path):
    """A later, shorter answer for the same address (another name) must not cut the kernel member short: the
    client holding the longer answer would be refused. The learn sets stand in by a recorder of adds (the kernel
    side is tests/dns/test_og_dns.py's)."""
    class Recorder:
        def __init__(self, ipv6=False):
            self.adds = []

        def add(self, items):
            self.adds.append(list(items))
            return len(items)

        def close(self):
            pass

    domains = tmp_path / "domains.json"
    domains.write_text(json.dumps({"revision": 1, "domains": [{"entry": 1, "name": "long.example", "ports": []},
                                                              {"entry": 2, "name": "short.example", "ports": []}]}))
    learner = Learner(factory=Recorder)
    try:
        config = Config({"upstreams": ["192.0.2.53"], "domains_file": str(domains), "grace": 0})
        forwarder = Forwarder(config, learner, Metrics(), Spool("", "gw1"), clock=lambda: 1000.0)

        def response(name, ttl):
            made = dns.message.make_response(dns.message.make_query(name, "A"))
            made.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "203.0.113.5"))
            return made

        asyncio.run(forwarder.learn("long.example", response("long.example", 3600)))
        asyncio.run(forwarder.learn("short.example", response("short.example", 5)))
        assert learner.sets.adds == [[("203.0.113.5", None, 3600)], [("203.0.113.5", None, 3600)]]
    finally:
        learner.close()


class FlakySets:
    """The learn sets' stand-in: records adds, refuses them while `refuse` is set (a full set, netlink gone)."""
    refuse = False

    def __init__(self, ipv6=False):
        self.adds = []

    def add(self, items):
        if FlakySets.refuse:
            raise LearnError("og-learn4 is full: raise maxelem")
        self.adds.append(list(items))
        return len(items)

    def close(self):
        pass


def a_forwarder(tmp_path, clock, name_cap=64):
    domains = tmp_path / "domains.json"
    domains.write_text(json.dumps({"revision": 1, "domains": [{"entry": 1, "name": "cdn.example", "ports": []}]}))
    learner = Learner(factory=FlakySets)
    config = Config({"upstreams": ["192.0.2.53"], "domains_file": str(domains), "grace": 0, "min_ttl": 5,
                     "name_cap": name_cap})
    return Forwarder(config, learner, Metrics(), Spool("", "gw1"), clock=clock), learner


def answer_of(name, ttl, *addresses):
    made = dns.message.make_response(dns.message.make_query(name, "A"))
    made.answer.append(dns.rrset.from_text_list(name + ".", ttl, "IN", "A", list(addresses)))
    return made


def test_expiry_drops_what_is_due_and_keeps_what_a_later_answer_refreshed(tmp_path):
    now = [1000.0]
    forwarder, learner = a_forwarder(tmp_path, lambda: now[0])
    try:
        asyncio.run(forwarder.learn("cdn.example", answer_of("cdn.example", 10, "203.0.113.1", "203.0.113.2")))
        now[0] = 1005.0     # a second answer: .2 again (refreshed to 1025), .3 new
        asyncio.run(forwarder.learn("cdn.example", answer_of("cdn.example", 20, "203.0.113.2", "203.0.113.3")))
        forwarder.expire(now=1010.0)
        assert sorted(forwarder.live[(1, "cdn.example")]) == ["203.0.113.2", "203.0.113.3"]
        assert sorted(forwarder.address_users) == ["203.0.113.2", "203.0.113.3"]
        forwarder.expire(now=1025.0)
        assert forwarder.live == {} and forwarder.address_users == {} and forwarder.kernel_expires == {}
        assert forwarder.metrics.expired._value.get() == 3
    finally:
        learner.close()


def test_a_failed_kernel_add_holds_nothing_so_the_caps_stay_free(tmp_path):
    """admit() books an address before the kernel is asked; when the kernel refuses, the booking is taken back:
    a name at its cap would otherwise refuse addresses the gateway never let through."""
    now = [1000.0]
    forwarder, learner = a_forwarder(tmp_path, lambda: now[0], name_cap=2)
    try:
        asyncio.run(forwarder.learn("cdn.example", answer_of("cdn.example", 30, "203.0.113.1")))
        FlakySets.refuse = True
        asyncio.run(forwarder.learn("cdn.example", answer_of("cdn.example", 60, "203.0.113.1", "203.0.113.2")))
        FlakySets.refuse = False
        assert forwarder.live == {(1, "cdn.example"): {"203.0.113.1": 1030.0}}   # the refresh taken back too
        assert forwarder.metrics.learn_errors._value.get() == 1
        asyncio.run(forwarder.learn("cdn.example", answer_of("cdn.example", 30, "203.0.113.3")))
        assert sorted(forwarder.live[(1, "cdn.example")]) == ["203.0.113.1", "203.0.113.3"]   # not capped
        assert learner.sets.adds == [[("203.0.113.1", None, 30)], [("203.0.113.3", None, 30)]]
        forwarder.expire(now=1030.0)
        assert forwarder.live == {}
    finally:
        FlakySets.refuse = False
        learner.close()


def test_a_spool_file_is_what_one_learned_frame_takes(tmp_path):
    """2,500 addresses in one second go to three files of at most 1,000 items; the root name is '.', a name
    longer than the protocol takes is counted as dropped; the agent's builder accepts every file."""
    spool = Spool(str(tmp_path), "gw1")
    for i in range(2500):
        spool.note_learned(1, "a.example", "2001:db8::%x" % i, [], 60, 2000000000, now=1767225600)
    spool.note_unlisted("", 1767225600)
    spool.note_unlisted("x" * 300, 1767225600)
    spool.flush(now=1767225600)
    names = spool_files(str(tmp_path))
    bodies = [json.loads((tmp_path / n).read_text()) for n in names]
    assert [len(b["learned"]) for b in bodies] == [1000, 1000, 500]
    assert bodies[0]["unlisted"] == [{"name": ".", "count": 1, "first": 1767225600, "last": 1767225600}]
    assert bodies[0]["unlisted_dropped"] == 1
    for name, body in zip(names, bodies):
        assert og_protocol.parse_agent_frame(og_protocol.learned(name, body)).batch == name


def test_the_learners_check_names_what_is_wrong_with_the_learn_sets():
    """Learner.check() (og-dns's /healthz): ok while the sets' check passes, the LearnError's text when a set is
    gone, and not ok once closed; one check per check_every however many probes come (each check waits behind
    the answers' adds); the namespace test with real sets is tests/dns/test_og_dns.py."""
    state = {"missing": None, "checks": 0}
    now = [100.0]

    class Sets(object):
        def __init__(self, ipv6=False):
            pass

        def check(self):
            state["checks"] += 1
            if state["missing"]:
                raise LearnError("ipset %s does not exist in this network namespace" % state["missing"])

        def close(self):
            pass

    learner = Learner(factory=Sets, clock=lambda: now[0])
    assert learner.check() == (True, "ok")
    state["missing"] = "og-learnp4"
    # Within the second: the same result, and the sets are not asked again.
    assert [learner.check() for dummy in range(50)] == [(True, "ok")] * 50 and state["checks"] == 1
    now[0] += 1.0
    assert learner.check() == (False, "ipset og-learnp4 does not exist in this network namespace")
    state["missing"] = None
    assert learner.check()[0] is False
    now[0] += 1.0
    assert learner.check() == (True, "ok") and state["checks"] == 3
    learner.close()
    assert learner.check() == (False, "learn sets closed")


def test_the_spool_keeps_the_newest_16_addresses_a_name_answered_bounded_and_once_a_minute(tmp_path):
    """note_answer (docs/dns.md, "Answers"): per name the newest MAX_ANSWER_ADDRESSES addresses and the last time;
    at most unlisted_table names a second (more counted as answers_dropped); the same addresses again within 60 s
    are not written again, a new one is; the files are what the agent's builder takes."""
    spool = Spool(str(tmp_path), "gw1", unlisted_table=2)
    spool.note_answer("pool.example", ["203.0.113.%d" % i for i in range(20)], 1000)
    spool.note_answer("pool.example", ["203.0.113.3"], 1001)                 # moves to the newest end
    spool.note_answer("one.example", ["198.51.100.7"], 1000)
    spool.note_answer("third.example", ["198.51.100.8"], 1000)               # beyond the table: dropped
    spool.note_answer("empty.example", [], 1000)                             # NODATA: nothing to say
    body = json.load(open(spool.flush(now=1001.0)))
    assert body["answers"] == [
        {"name": "one.example", "addresses": ["198.51.100.7"], "last": 1000},
        {"name": "pool.example", "addresses": ["203.0.113.%d" % i for i in list(range(5, 20)) + [3]],
         "last": 1001}]
    assert body["answers_dropped"] == 1
    assert og_protocol.parse_agent_frame(og_protocol.learned("learned-1-1-1.json", body)).answers[0].addresses \
        == ("198.51.100.7",)
    spool.note_answer("one.example", ["198.51.100.7"], 1030)                 # told 30 s ago: not again
    assert spool.flush(now=1030.0) is None
    spool.note_answer("one.example", ["198.51.100.9"], 1031)                 # a new address: at once
    assert json.load(open(spool.flush(now=1031.0)))["answers"] == [
        {"name": "one.example", "addresses": ["198.51.100.9"], "last": 1031}]
    spool.note_answer("one.example", ["198.51.100.7"], 1061)                 # a minute on: again
    assert json.load(open(spool.flush(now=1061.0)))["answers"][0]["last"] == 1061
    # 600 names in one second: three files of at most 250 answers, each a frame the builder takes.
    many = Spool(str(tmp_path / "many"), "gw1")
    for i in range(600):
        many.note_answer("n%03d.example" % i, ["2001:db8::%x" % j for j in range(16)], 1767225600)
    many.flush(now=1767225600)
    bodies = [json.loads((tmp_path / "many" / n).read_text()) for n in spool_files(str(tmp_path / "many"))]
    assert [len(b["answers"]) for b in bodies] == [250, 250, 100]
    for n, b in zip(spool_files(str(tmp_path / "many")), bodies):
        og_protocol.parse_agent_frame(og_protocol.learned(n, b))


class OneAnswer(asyncio.DatagramProtocol):
    """An upstream on 127.0.0.1 that answers every query with cdn.example A 203.0.113.1 and .2."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text_list(query.question[0].name, 30, "IN", "A",
                                                     ["203.0.113.1", "203.0.113.2"]))
        self.transport.sendto(reply.to_wire(), addr)


def test_the_answer_is_handed_back_before_its_addresses_are_noted(tmp_path):
    """handle() returns the wire (the caller sends it at once) with the answer's bookkeeping still to run: it runs
    when the event loop next gets control, for a listed name and for an unlisted one."""
    domains = tmp_path / "domains.json"
    domains.write_text(json.dumps({"revision": 1, "domains": [{"entry": 1, "name": "cdn.example", "ports": []}]}))

    async def go():
        loop = asyncio.get_running_loop()
        transport, dummy = await loop.create_datagram_endpoint(OneAnswer, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        learner = Learner(factory=FlakySets)
        config = Config({"upstreams": ["127.0.0.1:%d" % port], "domains_file": str(domains)})
        forwarder = Forwarder(config, learner, Metrics(), Spool(str(tmp_path / "spool"), "gw1"), clock=lambda: 1000)
        seen = []
        try:
            for name in ("cdn.example", "other.example"):
                wire = await forwarder.handle(dns.message.make_query(name, "A").to_wire(), "udp")
                seen.append((name, sorted(forwarder.spool.answers)))        # right after: nothing noted yet
                assert sorted(rd.address for rd in dns.message.from_wire(wire).answer[0]) == [
                    "203.0.113.1", "203.0.113.2"]
                await asyncio.sleep(0)
                seen.append((name, sorted(forwarder.spool.answers)))
        finally:
            transport.close()
            learner.close()
        return seen, forwarder.spool.answers

    seen, noted = asyncio.run(go())
    assert seen == [("cdn.example", []), ("cdn.example", ["cdn.example"]),
                    ("other.example", ["cdn.example"]), ("other.example", ["cdn.example", "other.example"])]
    assert {name: sorted(held) for name, held in noted.items()} == {
        "cdn.example": ["203.0.113.1", "203.0.113.2"], "other.example": ["203.0.113.1", "203.0.113.2"]}
