"""og-dns on the lab, deployed by the roles: the clients resolve through their gateways' og-dns (og_route_dns), which
forwards to the lab's dnsmasq; dnsmasq delegates cdn.lab.test to the tests' own DNS server (tests/support/dnsauth.py,
zone $LAB/dns/cdn.json, see scripts/lab's header). Every test proves with HTTP answers that cross the real gateway
(or connections it refuses), and with the members of the gateways' kernel sets.

Address plan (198.51.100.128/26 answers HTTP on the lab's "inet" host): .128-.159 the rotating pool, .160-.175 the
kill -9 test's pool, .176-.179 the upstream outage test's, .180-.182 the wildcard test's, .183 the CNAME chain's
public end, .184 the failover test's; each test has addresses of its own, since learned addresses stay in the
kernel for the answer's TTL plus og-dns's grace (900 s).
"""

import json
import os
import signal
import threading

import pytest
import yaml

from tests.support import TOP
from tests.support.lablib import LabHost, probe, recap
from tests.support.nslib import sh, wait_until

RESOLVE_FETCH = os.path.join(TOP, "tests", "support", "resolve_fetch.py")
POOL = ["198.51.100.%d" % i for i in range(128, 160)]
GW = {"gw1": "10.77.0.1", "gw2": "10.77.0.2"}


def members(lab, gateway, name):
    """The addresses (or address,port members) of one kernel set of a gateway."""
    out = LabHost(lab.ns(gateway)).run(["ipset", "list", name]).stdout
    return {line.split()[0] for line in out.split("Members:")[1].splitlines() if line.strip()}


def kernel(lab, gateway):
    """Every member of a gateway's allow and learn sets (IPv4), by set."""
    return {name: members(lab, gateway, name) for name in ("og-allow4", "og-learn4", "og-learnp4")}


def dig(lab, client, name, server=None, qtype="A"):
    """(status, addresses, server that answered) of a query from a client; through its resolv.conf by default.
    The addresses are sorted: DNS servers may rotate an RRset's order (dnsmasq's cache does)."""
    argv = ["dig", name, qtype, "+tries=1", "+time=8"] + (["@" + server] if server else [])
    out = LabHost(lab.ns(client)).run(argv, check=False).stdout
    status = out.split("status: ")[1].split(",")[0] if "status: " in out else "no answer: " + out[-200:]
    section = out.split(";; ANSWER SECTION:")[1].split("\n\n")[0] if ";; ANSWER SECTION:" in out else ""
    addresses = sorted(line.split()[-1] for line in section.splitlines() if line.split()[3:4] == ["A"])
    answered_by = out.split(";; SERVER: ")[1].split("#")[0] if ";; SERVER: " in out else None
    return status, addresses, answered_by


def resolve_fetch(lab, client, name, count, interval=0.0):
    """Rounds of resolve-then-fetch from a client (tests/support/resolve_fetch.py): its JSON lines."""
    out = LabHost(lab.ns(client)).run([lab.python, RESOLVE_FETCH, name, "--count", str(count),
                                       "--interval", str(interval)], timeout=600).stdout
    return [json.loads(line) for line in out.splitlines()]


def outcomes(rounds):
    """{result: count} over every connection of the rounds, resolve errors counted as 'resolve error'."""
    counted = {}
    for item in rounds:
        for result in (item["results"].values() if "results" in item else ["resolve error"]):
            counted[result] = counted.get(result, 0) + 1
    return counted


@pytest.fixture
def dnslab(deployed):
    """The deployed lab, with the venv's python known (the clients run resolve_fetch.py with it)."""
    lab = deployed[0]
    lab.python = os.path.join(TOP, ".venv", "bin", "python")
    return lab


@pytest.fixture
def zone(dnslab):
    """zone({"name": {"A": {...}}}): names added to the tests' DNS zone (cdn.lab.test), the zone put back after."""
    path = os.path.join(dnslab.dir, "dns", "cdn.json")
    with open(path) as fh:
        original = fh.read()

    def write(names):
        data = json.loads(original)
        data.update(names)
        with open(path + ".tmp", "w") as fh:
            json.dump(data, fh)
        os.rename(path + ".tmp", path)
    yield write
    with open(path + ".tmp", "w") as fh:
        fh.write(original)
    os.rename(path + ".tmp", path)


@pytest.fixture
def entries(dnslab):
    """entry(target): an entry made through the API, deleted after the test."""
    made = []

    def add(target):
        created = dnslab.api("POST", "/api/v1/entries", json={"target": target})
        assert created.status_code == 201, created.text
        made.append(created.json()["id"])
        return created.json()
    yield add
    for entry_id in made:
        dnslab.api("DELETE", "/api/v1/entries/%d" % entry_id)


def learned_by_gw1(lab, client, name):
    """Once gw1's og-dns has the entry (the agent writes the domains file, og-dns reloads it within a second): a
    name's answer through gw1 lands in gw1's learn set. The addresses of that answer."""
    seen = {}

    def learned():
        status, addresses, dummy = dig(lab, client, name, server=GW["gw1"])
        seen["addresses"] = addresses
        return status == "NOERROR" and addresses and set(addresses) <= members(lab, "gw1", "og-learn4")
    try:
        wait_until(learned, timeout=30, interval=0.5, what="%s learned by gw1's og-dns" % name)
    except AssertionError as exc:
        host = os.path.join(lab.dir, "hosts", "gw1")
        with open(os.path.join(host, "var", "lib", "outputguard", "gateway", "domains.json")) as fh:
            domains = fh.read()
        with open(os.path.join(host, "var", "log", "outputguard", "og-dns.log")) as fh:
            log = fh.read()[-3000:]
        raise AssertionError("%s; answer %s; domains file %s; og-dns log ...%s" % (exc, seen, domains, log)) from exc
    return seen["addresses"]


def test_clients_resolve_through_their_gateways_og_dns(dnslab):
    lab = dnslab
    for client in ("c1", "c2"):
        resolv = LabHost(lab.ns(client)).run(["cat", "/etc/resolv.conf"]).stdout
        assert [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")] == \
            ["10.77.0.1", "10.77.0.2"], resolv
        status, addresses, server = dig(lab, client, "saas.lab.test")
        assert (status, addresses, server) == ("NOERROR", ["203.0.113.10"], "10.77.0.1")
    for gateway in GW:
        status, addresses, dummy = dig(lab, "c1", "partner.lab.test", server=GW[gateway])
        assert (status, addresses) == ("NOERROR", ["198.51.100.20"])


# Slow (about a minute): 120 rounds on each of the two clients, each a query and two new connections.
def test_a_rotating_cdn_name_opens_every_answer_before_the_client_connects(dnslab, entries):
    lab = dnslab
    # Without an entry the name is answered (unlisted names are forwarded) and its addresses are refused.
    before = resolve_fetch(lab, "c1", "pool.cdn.lab.test", 3)
    assert outcomes(before) == {"refused": 6}, before
    assert not set(POOL) & members(lab, "gw1", "og-learn4")

    entry = entries("pool.cdn.lab.test")
    learned_by_gw1(lab, "c1", "pool.cdn.lab.test")
    results = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c, resolve_fetch(lab, c, "pool.cdn.lab.test",
                                                                                        120)))
               for c in ("c1", "c2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in ("c1", "c2"):
        assert outcomes(results[client]) == {"ok": 240}, (client, outcomes(results[client]))
    answers = {c: [tuple(r["addresses"]) for r in results[c]] for c in results}
    # A fresh random 2 of 32 per query: each client saw most of the pool, and the two got different answers.
    assert all(len(a) == 2 and set(a) <= set(POOL) for c in answers for a in answers[c])
    assert all(len({x for a in answers[c] for x in a}) >= 16 for c in answers)
    assert answers["c1"] != answers["c2"]
    # What the clients reached, gw1's og-dns learned (the central resolver's 2 addresses every 10 s cannot explain
    # it) and reported: the entry holds it, learned through gw1 (unless the resolver happened to answer it too).
    reached = {x for c in answers for a in answers[c] for x in a}
    assert reached <= members(lab, "gw1", "og-learn4")

    def on_entry():
        return {a["address"].split("/")[0]: (a["source"], a["learned_via"])
                for a in lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()["addresses"]}
    wait_until(lambda: reached <= set(on_entry()), timeout=30, what="every reached address on the entry")
    learned = [x for x, how in on_entry().items() if how == ("learned", "gw1")]
    assert len(learned) >= len(reached) // 2, on_entry()


def test_a_wildcard_entry_opens_names_under_it_and_not_its_apex(dnslab, entries, records):
    lab = dnslab
    records("wild", ["198.51.100.180 a.w.lab.test", "198.51.100.181 w.lab.test", "198.51.100.182 c.b.w.lab.test"])
    wait_until(lambda: dig(lab, "c1", "a.w.lab.test")[1] == ["198.51.100.180"], timeout=10, what="records served")
    entry = entries("*.w.lab.test")
    assert entry["wildcard"] is True and entry["addresses"] == []
    learned_by_gw1(lab, "c1", "a.w.lab.test")
    assert resolve_fetch(lab, "c1", "a.w.lab.test", 1)[0]["results"] == {"198.51.100.180": "ok"}
    assert resolve_fetch(lab, "c2", "c.b.w.lab.test", 1)[0]["results"] == {"198.51.100.182": "ok"}
    # The apex is not under the wildcard: answered, not learned, refused.
    assert resolve_fetch(lab, "c1", "w.lab.test", 1)[0]["results"] == {"198.51.100.181": "refused"}
    sets = kernel(lab, "gw1")
    assert {"198.51.100.180", "198.51.100.182"} <= sets["og-learn4"]
    assert "198.51.100.181" not in sets["og-learn4"] | sets["og-allow4"]
    # Reported to the server: the entry shows what gw1's DNS learned.
    wait_until(lambda: {a["address"]: a["learned_via"] for a in lab.api(
        "GET", "/api/v1/entries/%d" % entry["id"]).json()["addresses"]} == {
        "198.51.100.180/32": "gw1", "198.51.100.182/32": "gw1"}, timeout=30, what="learned addresses on the entry")


def test_a_cname_chain_into_an_internal_address_learns_only_its_public_end(dnslab, entries, zone):
    lab = dnslab
    zone({"chain.cdn.lab.test": {"CNAME": {"ttl": 10, "values": ["edge.cdn.lab.test"]}},
          "edge.cdn.lab.test": {"A": {"ttl": 10, "values": ["10.77.0.10", "198.51.100.183"]}}})
    entries("chain.cdn.lab.test")
    learned = {}

    def public_end_learned():
        learned["answer"] = dig(lab, "c1", "chain.cdn.lab.test", server=GW["gw1"])
        return "198.51.100.183" in members(lab, "gw1", "og-learn4")
    wait_until(public_end_learned, timeout=30, interval=0.5, what="the chain's public end learned by gw1")
    # The client gets the whole answer; only its public address opens.
    assert learned["answer"][:2] == ("NOERROR", ["10.77.0.10", "198.51.100.183"])
    assert probe(lab, "c1", "198.51.100.183") == "ok"
    for gateway in GW:
        assert all("10.77.0.10" not in {m.split(",")[0] for m in found} for found in kernel(lab, gateway).values())
    metrics = LabHost(lab.ns("gw1")).run(["curl", "-s", "-m", "5", "http://127.0.0.1:9901/metrics"]).stdout
    refused = [line for line in metrics.splitlines() if line.startswith("og_dns_refused_internal_total")]
    assert refused and float(refused[0].split()[-1]) >= 1, refused


def agent_pid(lab, gateway):
    with open(os.path.join(lab.dir, "hosts", gateway, "run", "og-gateway-agent.pid")) as fh:
        return int(fh.read())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def killed_agent(dnslab):
    """kill(): SIGKILL to gw1's agent (its pid from the pid file the service role's lab manager writes), and back
    back(): site.yml on gw1 starts it again, as the service manager would (its recap); run after the test if the test
    did not."""
    lab = dnslab
    state = {}

    def kill():
        state["pid"] = agent_pid(lab, "gw1")
        os.kill(state["pid"], signal.SIGKILL)
        wait_until(lambda: not alive(state["pid"]), timeout=10, what="the agent gone")
        return state["pid"]

    def back():
        state["site"] = recap(lab.lab("site", "--limit", "gw1").stdout)["gw1"]
        return state["site"]
    yield kill, back
    if "pid" in state and "site" not in state:
        lab.lab("site", "--limit", "gw1", check=False)


# Slow (about 2 minutes): site.yml on gw1 brings the agent back.
def test_the_agent_killed_9_stops_neither_dns_nor_learning_and_reports_afterwards(dnslab, entries, zone,
                                                                                  killed_agent):
    lab = dnslab
    kill, back = killed_agent
    pool = ["198.51.100.%d" % i for i in range(160, 168)]
    zone({"x.kill.cdn.lab.test": {"A": {"ttl": 10, "pool": pool, "pick": 2, "random": True}}})
    # A wildcard, which the central resolver never resolves: what reaches the entry is what the agent reported. (An
    # exact name's learned address the resolver also answers becomes "resolved" and ages out after the resolver's
    # grace, 20 s on the lab, while og-dns keeps it for its TTL plus 900 s: see the report of branch h-j.)
    entry = entries("*.kill.cdn.lab.test")
    learned_by_gw1(lab, "c1", "x.kill.cdn.lab.test")
    before = members(lab, "gw1", "og-learn4")
    pid = kill()
    # With no agent: og-dns answers, puts every answer's addresses into gw1's kernel set before the client has it,
    # and nothing learned before goes away.
    answered = set()
    for _round in range(40):
        status, addresses, dummy = dig(lab, "c2", "x.kill.cdn.lab.test", server=GW["gw1"])
        assert status == "NOERROR" and len(addresses) == 2
        assert set(addresses) <= members(lab, "gw1", "og-learn4")
        answered |= set(addresses)
    assert not alive(pid)
    assert before <= members(lab, "gw1", "og-learn4")
    assert answered == set(pool)
    restarted = back()
    assert restarted["failed"] == 0
    assert agent_pid(lab, "gw1") != pid and alive(agent_pid(lab, "gw1"))
    assert before | answered <= members(lab, "gw1", "og-learn4")
    # The agent back: what og-dns spooled while it was dead reaches the server, and through it gw2.
    wait_until(lambda: answered <= {a["address"].split("/")[0] for a in lab.api(
        "GET", "/api/v1/entries/%d" % entry["id"]).json()["addresses"]}, timeout=60,
        what="every address answered while the agent was dead on the entry")
    wait_until(lambda: answered <= members(lab, "gw2", "og-allow4"), timeout=30, what="the addresses on gw2")


# Slow (about 2 minutes): site.yml on gw1 brings the agent back.
# With og_route_dns (the lab's) og-route probes og-dns's /healthz (og_route_health_port defaults to 9901): the agent
# dead leaves gw1's kernel rules and og-dns learning into them, so gw1 stays the clients' path and nothing is refused.
def test_connections_keep_working_while_the_agent_is_dead(dnslab, entries, zone, killed_agent):
    lab = dnslab
    kill, back = killed_agent
    pool = ["198.51.100.%d" % i for i in range(168, 176)]
    zone({"dead.cdn.lab.test": {"A": {"ttl": 10, "pool": pool, "pick": 2, "random": True}}})
    entries("dead.cdn.lab.test")
    learned_by_gw1(lab, "c1", "dead.cdn.lab.test")
    assert via(lab, "c1", pool[0]) == GW["gw1"]
    kill()
    # A client going on for 10 s (og-route gives up on a gateway after 2 failed probes 1 s apart).
    rounds = resolve_fetch(lab, "c1", "dead.cdn.lab.test", 100, interval=0.1)
    assert outcomes(rounds) == {"ok": 200}, (outcomes(rounds), via(lab, "c1", pool[0]))
    # The routes stayed on gw1: og-route probes og-dns's /healthz, which both gateways answer (so this is not fail
    # static, which would keep the routes with every gateway down), while gw1's agent's port answers nothing.
    assert via(lab, "c1", pool[0]) == GW["gw1"]
    assert {name: healthz(lab, "c1", address, 9901) for name, address in GW.items()} == {"gw1": "200", "gw2": "200"}
    assert healthz(lab, "c1", GW["gw1"], 9900) == "000"


# Slow (about 30 s): the outage lasts longer than the name's TTL, so the clients' answers are gone and they ask.
def test_an_upstream_dns_outage_answers_servfail_and_removes_nothing(dnslab, entries, zone):
    lab = dnslab
    pool = ["198.51.100.%d" % i for i in range(176, 180)]
    zone({"up.cdn.lab.test": {"A": {"ttl": 10, "pool": pool, "pick": 2, "random": True}}})
    entries("up.cdn.lab.test")
    learned_by_gw1(lab, "c1", "up.cdn.lab.test")
    wait_until(lambda: dig(lab, "c1", "up.cdn.lab.test") and set(pool) <= members(lab, "gw1", "og-learn4"),
               timeout=30, interval=0.2, what="the whole small pool learned")
    before = kernel(lab, "gw1")
    link = ["ip", "-n", lab.ns("sw"), "link", "set", "lan-dns"]
    try:
        sh(link + ["down"])
        for gateway in GW:
            status, addresses, dummy = dig(lab, "c1", "up.cdn.lab.test", server=GW[gateway])
            assert (status, addresses) == ("SERVFAIL", [])
        failed = resolve_fetch(lab, "c2", "up.cdn.lab.test", 1)
        assert "error" in failed[0], failed
        # Nothing removed; the learned addresses are still reachable through the gateway.
        after = kernel(lab, "gw1")
        assert all(before[name] <= after[name] for name in before)
        assert {address: probe(lab, "c1", address) for address in pool} == {address: "ok" for address in pool}
    finally:
        sh(link + ["up"], check=False)
    wait_until(lambda: dig(lab, "c1", "up.cdn.lab.test")[0] == "NOERROR", timeout=30, interval=0.5,
               what="DNS back")
    assert all(before[name] <= kernel(lab, "gw1")[name] for name in before)


def healthz(lab, client, address, port):
    """The HTTP status of a gateway's /healthz on a port, seen from a client ("000": no answer)."""
    return LabHost(lab.ns(client)).run(["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}",
                                        "http://%s:%d/healthz" % (address, port)], check=False).stdout


def via(lab, client, address):
    words = LabHost(lab.ns(client)).run(["ip", "route", "get", address]).stdout.split()
    return words[words.index("via") + 1] if "via" in words else None


# Slow (about 30 s): og-route moves the routes after gw1's health check fails.
def test_an_address_learned_by_gw1_is_reachable_through_gw2_after_failover(dnslab, entries, zone):
    lab = dnslab
    target = "198.51.100.184"
    zone({"x.f.cdn.lab.test": {"A": {"ttl": 10, "values": [target]}}})
    # A wildcard: the central resolver never resolves it, so only gw1's og-dns can have learned the address.
    entry = entries("*.f.cdn.lab.test")
    assert probe(lab, "c1", target) == "refused"
    assert learned_by_gw1(lab, "c1", "x.f.cdn.lab.test") == [target]
    wait_until(lambda: target in members(lab, "gw2", "og-allow4"), timeout=30,
               what="the learned address on gw2 through the server's change log")
    assert target not in members(lab, "gw2", "og-learn4")
    shown = lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()["addresses"]
    assert [(a["address"], a["source"], a["learned_via"]) for a in shown] == [(target + "/32", "learned", "gw1")]
    assert via(lab, "c1", target) == "10.77.0.1"
    link = ["ip", "-n", lab.ns("sw"), "link", "set", "lan-gw1"]
    try:
        sh(link + ["down"])
        wait_until(lambda: via(lab, "c1", target) == "10.77.0.2", timeout=15, what="routes moved to gw2")
        wait_until(lambda: probe(lab, "c1", target) == "ok", timeout=15, what="the address through gw2")
        assert resolve_fetch(lab, "c1", "x.f.cdn.lab.test", 1)[0]["results"] == {target: "ok"}
    finally:
        sh(link + ["up"], check=False)
    wait_until(lambda: via(lab, "c1", target) == "10.77.0.1", timeout=30, what="routes back on gw1")


def site_on(lab, host, check=True, **extra_vars):
    """site.yml on one lab host with extra vars: (that host's recap, ansible-playbook's output)."""
    proc = lab.lab("site", "--limit", host, "-e", json.dumps(extra_vars), check=check)
    return recap(proc.stdout).get(host, {}), proc.stdout


# Slow (about 3 minutes): three runs of site.yml on gw2.
def test_og_dns_without_upstreams_asks_the_hosts_nameservers_but_never_itself(dnslab):
    lab = dnslab
    folder = "/etc/netns/" + lab.ns("gw2")
    config = os.path.join(lab.dir, "hosts", "gw2", "etc", "outputguard", "dns.yml")

    def resolv(text):
        with open(os.path.join(folder, "resolv.conf"), "w") as fh:
            fh.write(text)
    os.makedirs(folder, exist_ok=True)
    try:
        # gw2's resolv.conf names gw2 itself first (as after the route role pointed it at its gateways).
        resolv("nameserver 10.77.0.2\nnameserver 10.77.0.53\n")
        changed, dummy = site_on(lab, "gw2", og_gateway_dns_upstreams=[])
        assert changed["failed"] == 0
        with open(config) as fh:
            assert yaml.safe_load(fh)["upstreams"] == ["10.77.0.53"]
        wait_until(lambda: dig(lab, "c1", "partner.lab.test", server=GW["gw2"])[:2] == ("NOERROR", ["198.51.100.20"]),
                   timeout=30, interval=0.5, what="gw2's og-dns answering through the lab's DNS")
        # Only itself: a failure naming the variable, and og-dns left as it was.
        resolv("nameserver 10.77.0.2\n")
        refused, output = site_on(lab, "gw2", check=False, og_gateway_dns_upstreams=[])
        assert refused["failed"] == 1
        assert "the host's /etc/resolv.conf names 10.77.0.2; og-dns's own addresses are left out" in output
        assert "og_gateway_dns_upstreams" in output
        with open(config) as fh:
            assert yaml.safe_load(fh)["upstreams"] == ["10.77.0.53"]
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
        restored, dummy = site_on(lab, "gw2")
    assert restored["failed"] == 0
    with open(config) as fh:
        assert yaml.safe_load(fh)["upstreams"] == ["10.77.0.53"]
