"""Fleet-wide learning with every part real (docs/dns.md, "Fleet-wide learning" and "Unlisted names"): a client
asks og-dns on gateway gw1 (its own process in gw1's namespace, the domains file written by gw1's agent, the
tests' own authoritative server tests/support/dnsauth.py as its upstream); og-dns learns into gw1's kernel learn
set and spools; gw1's agent sends the spool to the real og-server, which stores the address on the entry and
publishes it through the change log to gw2's agent and kernel set; and both lose it by themselves when it
expires. With the server down og-dns goes on learning and the spool waits; when the server is back everything is
stored once. The unlisted names og-dns counted reach GET /api/v1/dns/unlisted, bounded by its cap. A connection
gw1 refuses shows on the Blocked API with the name gw1's DNS answered with its destination, and "allow name" opens
it through og-dns (docs/ui.md, "Blocked")."""

import json
import os
import re
import shutil
import sys
import time

import pytest
import yaml

from tests.agent.conftest import _stack
from tests.support import BIN, TOP
from tests.support.agentlib import OTHER, AgentProcess, kernel_elements, scrape, sample, wait_until
from tests.support.nslib import link, tcp_probe, wait_ready

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
              pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)")]

UPSTREAM = "192.0.2.53"       # the authoritative server, in the internet namespace
GW_LAN = "10.88.0.1"          # og-dns listens on gw1's client side
ZONE = {
    "short.fleet.example": {"A": {"ttl": 10, "values": ["203.0.113.77"]}},
    "long.fleet.example": {"A": {"ttl": 300, "values": ["203.0.113.78"]}},
}
ZONE["shop.partner.example"] = {"A": {"ttl": 30, "values": [OTHER]}}      # refused until its name is allowed
ZONE.update({"n%d.unlisted.example" % i: {"A": {"ttl": 30, "values": ["203.0.113.%d" % (100 + i)]}}
             for i in range(8)})
CAP = 5


class Fleet:
    """The agent tests' stack (client, gw1, internet, server) plus gw2 with its own agent, and og-dns on gw1."""

    def __init__(self, stack, make, tmp_path):
        self.stack = stack
        self.dir = tmp_path
        self.agent1 = stack.start_agent()
        self.gw2 = make(stack.topo.tag + "g2")
        link(stack.topo.srv, "eth1", "10.97.0.2/24", self.gw2, "mgmt0", "10.97.0.1/24")
        self.gw2.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
        self.gw2.ip("link", "set", "og-out", "up")
        self.agent2 = AgentProcess(self.gw2, tmp_path / "agent2", ["ws://10.97.0.2:%d/ws/gateway" % stack.server.port],
                                   stack.server.gateway_token, name="gw2").start()
        stack.wait_converged()
        wait_until(lambda: stack.server.converged("gw2"), timeout=30, what="gw2 at the server's head revision")
        zone = tmp_path / "zone.json"
        zone.write_text(json.dumps(ZONE))
        inet = stack.topo.inet
        inet.ip("addr", "replace", UPSTREAM + "/32", "dev", "lo")
        log = str(tmp_path / "dnsauth.log")
        self.auth = inet.popen([sys.executable, "-m", "tests.support.dnsauth", "--zone", str(zone),
                                "--listen", UPSTREAM], cwd=TOP, stderr=open(log, "a"))
        wait_ready(lambda: "dnsauth: ready" in open(log).read(), self.auth, "dnsauth", log)
        self.dns = None

    def start_dns(self):
        config = {"listen": [GW_LAN], "port": 53, "upstreams": [UPSTREAM], "name": "gw1",
                  "domains_file": self.agent1.domains_file, "spool_dir": self.agent1.spool_dir,
                  "metrics_listen": "127.0.0.1:9901", "min_ttl": 1, "grace": 10, "upstream_timeout": 4.0}
        path = self.dir / "dns.yml"
        path.write_text(yaml.safe_dump(config))
        self.dns_log = str(self.dir / "og-dns.log")
        self.dns = self.stack.topo.gw.popen([os.path.join(BIN, "og-dns"), "--config", str(path)],
                                            stderr=open(self.dns_log, "a"))
        wait_ready(lambda: "og-dns: ready" in open(self.dns_log).read(), self.dns, "og-dns", self.dns_log)

    def domains(self):
        try:
            with open(self.agent1.domains_file) as fh:
                return {d["name"] for d in json.load(fh)["domains"]}
        except (OSError, ValueError):
            return set()

    def dns_knows(self, name):
        """og-dns has read a domains file naming `name` (og_dns_domains counts them)."""
        return name in self.domains() and (sample(scrape(self.stack.topo.gw, 9901), "og_dns_domains") or 0) >= 1

    def dig(self, name):
        out = self.stack.topo.client.run(["dig", "@" + GW_LAN, name, "A", "+tries=1", "+time=10"], check=False)
        assert "status: NOERROR" in out.stdout, out.stdout + out.stderr
        return re.findall(r"^[^;\s]\S*\s+\d+\s+IN\s+A\s+(\S+)$", out.stdout, re.M)   # the answer section

    def learn_set(self):
        out = self.stack.topo.gw.run(["ipset", "list", "og-learn4"]).stdout
        return sorted(m.group(1) for m in re.finditer(r"^(\S+) timeout \d+", out.split("Members:", 1)[1], re.M))

    def spool(self):
        try:
            return sorted(f for f in os.listdir(self.agent1.spool_dir) if f.startswith("learned-"))
        except FileNotFoundError:
            return []

    def entry(self, entry_id):
        status, body = self.stack.server.api("GET", "/api/v1/entries/%d" % entry_id)
        assert status == 200, body
        return body

    def unlisted(self, query=""):
        status, body = self.stack.server.api("GET", "/api/v1/dns/unlisted" + query)
        assert status == 200, body
        return body

    def close(self):
        for proc in (self.dns, self.agent2.proc, self.auth):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def fleet(netns_factory, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    # The stack of tests/agent/conftest.py, with a small unlisted cap: the resolver off (it never asks DNS).
    gen = _stack(netns_factory, tmp_path, monkeypatch, {"resolver_enabled": False, "dns_unlisted_max_rows": CAP})
    stack = next(gen, None)
    assert stack is not None, "the stack fixture made nothing"
    f = Fleet(stack, netns_factory, tmp_path)
    try:
        yield f
    finally:
        f.close()
        gen.close()


def test_an_address_learned_by_gw1s_dns_reaches_gw2_and_expires_from_both(fleet):
    server = fleet.stack.server
    wild = server.add("*.fleet.example")
    fleet.start_dns()
    wait_until(lambda: fleet.dns_knows("*.fleet.example"), timeout=30, what="og-dns reading the agent's domains")
    fleet.stack.wait_converged()

    assert fleet.dig("short.fleet.example") == ["203.0.113.77"]
    # In gw1's kernel learn set before the answer left og-dns (docs/dns.md).
    assert fleet.learn_set() == ["203.0.113.77"]
    # spool -> gw1's agent -> server -> change log -> gw2's agent -> gw2's kernel set.
    wait_until(lambda: kernel_elements(fleet.gw2) == ["203.0.113.77/32"], timeout=30,
               what="the address gw1 learned in gw2's kernel set")
    row = {a["address"]: a for a in fleet.entry(wild["id"])["addresses"]}["203.0.113.77/32"]
    assert (row["source"], row["learned_via"], row["published"]) == ("learned", "gw1", True)
    status, why = server.api("GET", "/api/v1/addresses/203.0.113.77")
    assert status == 200, why
    assert [(i["entry_id"], i["through"], i["expires_at"]) for i in why["entries"]] == [
        (wild["id"], "learned through gw1's DNS", row["expires_at"])]
    wait_until(lambda: kernel_elements(fleet.stack.topo.gw) == ["203.0.113.77/32"], timeout=30,
               what="the address in gw1's allow set too, from the change log")
    wait_until(lambda: not fleet.spool(), timeout=30, what="the spool file acknowledged and deleted")

    # By itself: gw1's learn set element times out in its kernel (TTL 10 + grace 10), the server's housekeeper
    # removes the row at its expiry, and both gateways' allow sets lose it through the change log.
    wait_until(lambda: fleet.learn_set() == [], timeout=60, what="gw1's kernel element timing out")
    wait_until(lambda: kernel_elements(fleet.gw2) == [] and kernel_elements(fleet.stack.topo.gw) == [],
               timeout=60, what="the expired address gone from gw2's and gw1's allow sets")
    assert fleet.entry(wild["id"])["addresses"] == []
    assert fleet.agent1.alive() and fleet.agent2.alive() and fleet.dns.poll() is None


def test_with_the_server_down_dns_learns_locally_and_the_spool_is_stored_once_when_it_is_back(fleet):
    server = fleet.stack.server
    wild = server.add("*.fleet.example")
    fleet.start_dns()
    wait_until(lambda: fleet.dns_knows("*.fleet.example"), timeout=30, what="og-dns reading the agent's domains")
    fleet.stack.wait_converged()

    server.stop()
    # Fail-static: og-dns answers and learns into gw1's kernel; the agent cannot send, the spool keeps the files.
    assert fleet.dig("long.fleet.example") == ["203.0.113.78"]
    for dummy in range(3):
        fleet.dig("n0.unlisted.example")
    assert fleet.learn_set() == ["203.0.113.78"]
    wait_until(fleet.spool, timeout=30, what="og-dns's spool files while the server is down")
    files = set(fleet.spool())
    assert kernel_elements(fleet.gw2) == []
    assert fleet.agent1.alive() and fleet.dns.poll() is None

    server.start()
    wait_until(lambda: not files & set(fleet.spool()), timeout=60,
               what="the spool files sent and acknowledged once the server is back")
    addresses = fleet.entry(wild["id"])["addresses"]
    assert [(a["address"], a["source"], a["learned_via"]) for a in addresses] == [
        ("203.0.113.78/32", "learned", "gw1")]                      # stored, and once
    wait_until(lambda: kernel_elements(fleet.gw2) == ["203.0.113.78/32"], timeout=30,
               what="the address learned while the server was down in gw2's kernel set")
    items = fleet.unlisted()["items"]
    assert [(i["gateway"], i["name"], i["count"]) for i in items] == [("gw1", "n0.unlisted.example", 3)]
    assert fleet.learn_set() == ["203.0.113.78"]


def test_unlisted_names_from_a_real_agent_are_listed_and_bounded_by_the_cap(fleet):
    server = fleet.stack.server
    server.add("*.fleet.example")
    fleet.start_dns()
    wait_until(lambda: fleet.dns_knows("*.fleet.example"), timeout=30, what="og-dns reading the agent's domains")
    # Eight names no entry allows (more than the cap of 5): n0-n2 first and stored, then, a second later,
    # n3-n7 (n7 asked most) and one allowed name, which is never listed.
    for i in range(3):
        assert fleet.dig("n%d.unlisted.example" % i) == ["203.0.113.%d" % (100 + i)]
    wait_until(lambda: fleet.unlisted()["total"] == 3 and not fleet.spool(), timeout=30,
               what="the first unlisted counts stored and the spool empty")
    first = max(i["last_seen"] for i in fleet.unlisted()["items"])
    wait_until(lambda: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) > first[:19], timeout=5, interval=0.05,
               what="the next second (so that n0-n2 are the oldest last seen)")
    for i in range(3, 8):
        for dummy in range(4 if i == 7 else 1):
            assert fleet.dig("n%d.unlisted.example" % i) == ["203.0.113.%d" % (100 + i)]
    fleet.dig("short.fleet.example")
    newest = [("n%d.unlisted.example" % i, 1) for i in range(3, 7)] + [("n7.unlisted.example", 4)]

    def listed():
        return sorted((i["name"], i["count"]) for i in fleet.unlisted()["items"])
    # Stored (they may come in two frames), and the housekeeper (every 10 s) keeps the CAP newest last seen:
    # n3-n7; the oldest, n0-n2, are dropped first.
    wait_until(lambda: listed() == newest, timeout=60, what="n3-n7 stored and the table pruned to its cap")
    wait_until(lambda: not fleet.spool(), timeout=30, what="the last spool file acknowledged")
    body = fleet.unlisted("?sort=busiest&gateway=gw1")
    assert (body["items"][0]["name"], body["total"], body["max_rows"]) == ("n7.unlisted.example", CAP, CAP)
    assert fleet.unlisted("?name=*.unlisted.example&per_page=2")["total"] == CAP
    assert fleet.unlisted("?gateway=gw2")["total"] == 0
    status, body = server.api("GET", "/api/v1/dns/unlisted?sort=loudest")
    assert status == 400 and "sort=loudest" in body["error"]["message"]
    # The server counts the queries per gateway (never per name) in its metrics.
    text = server.call("GET", "/metrics").text
    assert 'og_server_dns_unlisted_queries_total{gateway="gw1"} 11.0' in text
    assert "unlisted.example" not in text


def test_a_refused_connection_is_named_by_the_dns_answer_that_led_to_it_and_allow_name_opens_it(fleet):
    server = fleet.stack.server
    fleet.start_dns()
    fleet.stack.wait_converged()
    assert fleet.dig("shop.partner.example") == [OTHER]        # of no entry: forwarded, spooled with its address
    assert tcp_probe(fleet.stack.topo.client, OTHER, 80, timeout=2) == "refused"

    def rows():
        status, body = server.api("GET", "/api/v1/blocked?destination=%s" % OTHER)
        assert status == 200, body
        return [(i["client"], i["port"], i["names"]) for i in body["items"]], body["items"]
    # The blocked frame comes on the agent's counters cycle (15 s), the answers with og-dns's spool (1 s).
    wait_until(lambda: rows()[0] == [("10.88.0.2", "80", ["shop.partner.example"])], timeout=45, interval=0.5,
               what="the refused attempt on the server, named by gw1's DNS answer")
    status, body = server.api("GET", "/api/v1/blocked?name=*.partner.example")
    assert status == 200 and [i["destination"] for i in body["items"]] == [OTHER], body

    status, entry = server.api("POST", "/api/v1/blocked/%d/allow" % rows()[1][0]["id"],
                               {"name": "shop.partner.example", "duration": "1h"})
    assert status == 201, entry
    assert (entry["target"], entry["kind"], entry["ports"]) == ("shop.partner.example", "domain", ["80/tcp"])
    # Through the normal path: the domains frame, og-dns learns the next answer before the client has it.
    wait_until(lambda: fleet.dns_knows("shop.partner.example"), timeout=30, what="og-dns reading the new entry")
    assert fleet.dig("shop.partner.example") == [OTHER]
    assert tcp_probe(fleet.stack.topo.client, OTHER, 80, timeout=2) == "ok"
