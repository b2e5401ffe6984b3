"""og-dns with real parts: a client namespace asks the gateway namespace's og-dns (a subprocess) with dig, og-dns
forwards to the test's own authoritative server (tests/support/dnsauth.py) in an upstream namespace, and learns
into real kernel learn sets made in the gateway namespace."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import bcrypt
import pytest
import yaml

from tests.support import BIN, TOP, nslib
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils)")]

GW, CLIENT, UPSTREAM = "198.51.100.1", "198.51.100.2", "203.0.113.53"
BIG = ["203.0.113.%d" % n for n in range(100, 150)]
ZONE = {
    "exact.test": {"A": {"ttl": 30, "values": ["203.0.113.10"]}},
    "www.wild.test": {"A": {"ttl": 30, "values": ["203.0.113.11"]}},
    "a.b.wild.test": {"A": {"ttl": 30, "values": ["203.0.113.12"]}},
    "wild.test": {"A": {"ttl": 30, "values": ["203.0.113.13"]}},
    "port.test": {"A": {"ttl": 30, "values": ["203.0.113.14"]}},
    "alias.test": {"CNAME": {"ttl": 30, "values": ["edge.cdn.test"]}},
    "edge.cdn.test": {"CNAME": {"ttl": 30, "values": ["host.cdn.test"]}},
    "host.cdn.test": {"A": {"ttl": 20, "values": ["203.0.113.15"]}},
    "inside.test": {"CNAME": {"ttl": 30, "values": ["corp.internal.test"]}},
    "corp.internal.test": {"A": {"ttl": 30, "values": ["10.1.2.3", "203.0.113.16"]}},
    "long.test": {"A": {"ttl": 7200, "values": ["203.0.113.17"]}},
    "short.test": {"A": {"ttl": 1, "values": ["203.0.113.18"]}},
    "big.test": {"A": {"ttl": 30, "values": BIG}},
    "six.test": {"AAAA": {"ttl": 30, "values": ["2001:db8::6"]}, "A": {"ttl": 30, "values": ["203.0.113.19"]}},
    "other.test": {"A": {"ttl": 30, "values": ["203.0.113.20"]}},
    "pool.cap.test": {"A": {"ttl": 30, "pool": ["203.0.113.%d" % n for n in range(30, 34)], "pick": 4}},
    "more.cap.test": {"A": {"ttl": 30, "values": ["203.0.113.40", "203.0.113.41"]}},
    "rot.test": {"A": {"ttl": 5, "pool": ["203.0.113.%d" % n for n in range(50, 54)], "pick": 2}},
}
DOMAINS = [
    {"entry": 1, "name": "exact.test", "ports": []},
    {"entry": 2, "name": "*.wild.test", "ports": []},
    {"entry": 3, "name": "port.test", "ports": ["443/tcp", "8000-8010/tcp"]},
    {"entry": 4, "name": "alias.test", "ports": []},
    {"entry": 5, "name": "inside.test", "ports": []},
    {"entry": 6, "name": "long.test", "ports": []},
    {"entry": 7, "name": "short.test", "ports": []},
    {"entry": 8, "name": "big.test", "ports": []},
    {"entry": 9, "name": "six.test", "ports": []},
    {"entry": 10, "name": "*.cap.test", "ports": []},
    {"entry": 12, "name": "rot.test", "ports": []},
]


class Lab(object):
    """The three namespaces, the upstream server, and og-dns (restarted per test with its settings)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="og-dns-test-")
        self.zone = os.path.join(self.dir, "zone.json")
        self.domains = os.path.join(self.dir, "domains.json")
        self.write_zone(ZONE)
        self.nss = []
        self.client = self.ns("dnc")
        self.gw = self.ns("dng")
        self.up = self.ns("dnu")
        nslib.link(self.client, "c0", CLIENT + "/24", self.gw, "g0", GW + "/24")
        nslib.link(self.gw, "g1", "203.0.113.1/24", self.up, "u0", UPSTREAM + "/24")
        for name, kind in (("og-learn4", "hash:ip"), ("og-learnp4", "hash:ip,port")):
            self.gw.run(["ipset", "create", name, kind, "timeout", "3600", "counters"])
            self.gw.run(["ipset", "create", name.replace("4", "6"), kind, "family", "inet6", "timeout", "3600",
                         "counters"])
        self.auth = None
        self.start_upstream()
        self.dns = None
        self.log = None

    def ns(self, suffix):
        ns = nslib.Netns(nslib.PREFIX + suffix)
        self.nss.append(ns)
        return ns

    def write_zone(self, zone):
        with open(self.zone + ".tmp", "w") as fh:
            json.dump(zone, fh)
        os.replace(self.zone + ".tmp", self.zone)

    def start_upstream(self):
        log = os.path.join(self.dir, "dnsauth.log")
        self.auth = self.up.popen([sys.executable, "-m", "tests.support.dnsauth", "--zone", self.zone,
                                   "--listen", UPSTREAM], cwd=TOP, stderr=open(log, "a"))
        nslib.wait_ready(lambda: "dnsauth: ready" in open(log).read(), self.auth, "dnsauth", log)

    def stop_upstream(self):
        self.auth.kill()
        self.auth.wait(timeout=10)

    def start(self, **settings):
        self.stop()
        self.spool = os.path.join(self.dir, "spool")
        shutil.rmtree(self.spool, ignore_errors=True)
        for name in ("og-learn4", "og-learnp4", "og-learn6", "og-learnp6"):
            self.gw.run(["ipset", "flush", name])
        with open(self.domains, "w") as fh:
            json.dump({"revision": 1, "domains": DOMAINS}, fh)
        config = {"listen": [GW], "port": 53, "upstreams": [UPSTREAM], "domains_file": self.domains,
                  "spool_dir": self.spool, "metrics_listen": "127.0.0.1:9901", "name": "gw-test",
                  "upstream_timeout": 4.0, "grace": 100}
        config.update(settings)
        path = os.path.join(self.dir, "dns.yml")
        with open(path, "w") as fh:
            yaml.safe_dump(config, fh)
        self.log = os.path.join(self.dir, "og-dns.log")
        self.dns = self.gw.popen([os.path.join(BIN, "og-dns"), "--config", path], stderr=open(self.log, "w"))
        nslib.wait_ready(lambda: "og-dns: ready" in open(self.log).read(), self.dns, "og-dns", self.log)

    def stop(self):
        if self.dns is not None and self.dns.poll() is None:
            self.dns.terminate()
            self.dns.wait(timeout=30)
        self.dns = None

    def dig(self, name, *options, qtype="A"):
        out = self.client.run(["dig", "@" + GW, name, qtype, "+tries=1", "+time=10"] + list(options), check=False)
        return out.stdout

    def members(self, name):
        """{member: seconds left} of a learn set in the gateway namespace."""
        out = self.gw.run(["ipset", "list", name]).stdout
        found = {}
        for line in out.split("Members:", 1)[1].splitlines():
            m = re.match(r"(\S+) timeout (\d+)", line.strip())
            if m:
                found[m.group(1)] = int(m.group(2))
        return found

    def scrape(self):
        code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/metrics').read().decode())"
        return self.gw.run([sys.executable, "-c", code]).stdout

    def spooled(self):
        """The spool files' bodies, oldest first."""
        if not os.path.isdir(self.spool):
            return []
        files = sorted((f for f in os.listdir(self.spool) if f.startswith("learned-")),
                       key=lambda f: [int(x) for x in f[8:-5].split("-")])
        return [json.load(open(os.path.join(self.spool, f))) for f in files]

    def close(self):
        self.stop()
        for ns in reversed(self.nss):
            ns.delete()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    made = None
    try:
        made = Lab()
        yield made
    finally:
        if made is not None:
            made.close()
        nslib.cleanup_all()


@pytest.fixture
def dnsd(lab):
    lab.start()
    yield lab
    lab.stop()
    if lab.auth.poll() is not None:
        lab.start_upstream()


def answers(out):
    return sorted(re.findall(r"^[^;\s]\S*\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M))


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def test_exact_name_is_learned_with_its_timeout_before_the_answer(dnsd):
    assert dnsd.members("og-learn4") == {}
    out = dnsd.dig("exact.test")
    assert answers(out) == ["203.0.113.10"], out
    # Right after dig returned: the address is in the set, with ttl 30 + grace 100.
    learned = dnsd.members("og-learn4")
    assert set(learned) == {"203.0.113.10"}
    assert 120 < learned["203.0.113.10"] <= 130
    assert dnsd.members("og-learnp4") == {}


def test_wildcard_matches_labels_below_never_the_name_itself(dnsd):
    assert answers(dnsd.dig("www.wild.test")) == ["203.0.113.11"]
    assert answers(dnsd.dig("A.B.Wild.Test")) == ["203.0.113.12"]
    assert answers(dnsd.dig("wild.test")) == ["203.0.113.13"]
    assert set(dnsd.members("og-learn4")) == {"203.0.113.11", "203.0.113.12"}


def test_port_scoped_entry_goes_to_the_port_set(dnsd):
    assert answers(dnsd.dig("port.test")) == ["203.0.113.14"]
    assert set(dnsd.members("og-learnp4")) == {"203.0.113.14,tcp:443"} | {
        "203.0.113.14,tcp:%d" % p for p in range(8000, 8011)}
    assert dnsd.members("og-learn4") == {}


def test_cname_chain_learns_the_final_address_and_never_an_internal_one(dnsd):
    out = dnsd.dig("alias.test")
    assert answers(out) == ["203.0.113.15"], out
    learned = dnsd.members("og-learn4")
    assert set(learned) == {"203.0.113.15"}
    assert 110 < learned["203.0.113.15"] <= 120   # the A record's ttl 20, not the CNAME's 30
    out = dnsd.dig("inside.test")
    assert answers(out) == ["10.1.2.3", "203.0.113.16"], out
    assert set(dnsd.members("og-learn4")) == {"203.0.113.15", "203.0.113.16"}
    assert metric(dnsd.scrape(), "og_dns_refused_internal_total") == 1


def test_ttls_are_clamped_in_the_answer_and_the_set(dnsd):
    dnsd.start(max_ttl=60, min_ttl=5)
    out = dnsd.dig("long.test", "+noall", "+answer")
    assert re.search(r"long\.test\.\s+60\s+IN\s+A\s+203\.0\.113\.17", out), out
    out = dnsd.dig("other.test", "+noall", "+answer")   # unlisted: passed through untouched
    assert re.search(r"other\.test\.\s+30\s+IN\s+A", out), out
    dnsd.dig("short.test")
    learned = dnsd.members("og-learn4")
    assert 150 < learned["203.0.113.17"] <= 160     # max_ttl 60 + grace 100
    assert 95 < learned["203.0.113.18"] <= 105      # ttl 1 raised to min_ttl 5, + grace 100


def test_tcp_query_and_truncation_fallback(dnsd):
    out = dnsd.dig("big.test", "+noedns", "+ignore")
    assert re.search(r"flags:[^;]* tc", out), out
    assert answers(out) == []
    out = dnsd.dig("big.test", "+noedns")       # dig retries over TCP after TC
    assert answers(out) == sorted(BIG), out
    assert set(dnsd.members("og-learn4")) == set(BIG)
    out = dnsd.dig("exact.test", "+tcp")
    assert answers(out) == ["203.0.113.10"]
    assert "203.0.113.10" in dnsd.members("og-learn4")
    text = dnsd.scrape()
    assert metric(text, "og_dns_queries_total", '{transport="tcp"}') == 2
    assert metric(text, "og_dns_queries_total", '{transport="udp"}') == 2


def test_upstream_down_gives_servfail_and_keeps_the_set(dnsd):
    assert answers(dnsd.dig("exact.test")) == ["203.0.113.10"]
    dnsd.stop_upstream()
    out = dnsd.dig("exact.test")
    assert "status: SERVFAIL" in out, out
    assert set(dnsd.members("og-learn4")) == {"203.0.113.10"}
    text = dnsd.scrape()
    assert metric(text, "og_dns_upstream_errors_total", '{upstream="%s:53"}' % UPSTREAM) == 1
    assert metric(text, "og_dns_responses_total", '{rcode="SERVFAIL"}') == 1


def test_unlisted_names_forwarded_or_refused_and_counted_in_the_spool(dnsd):
    assert answers(dnsd.dig("other.test")) == ["203.0.113.20"]
    assert answers(dnsd.dig("other.test")) == ["203.0.113.20"]
    assert dnsd.members("og-learn4") == {}
    nslib.wait_until(lambda: any(f["unlisted"] for f in dnsd.spooled()), timeout=30, what="a spool file")
    counts = {}
    for body in dnsd.spooled():
        for item in body["unlisted"]:
            counts[item["name"]] = counts.get(item["name"], 0) + item["count"]
    assert counts == {"other.test": 2}
    dnsd.start(unlisted="refuse")
    out = dnsd.dig("other.test")
    assert "status: REFUSED" in out, out
    assert answers(dnsd.dig("exact.test")) == ["203.0.113.10"]
    assert metric(dnsd.scrape(), "og_dns_unlisted_total") == 1


def test_spool_file_reports_each_learned_address_once(dnsd):
    dnsd.dig("exact.test")
    dnsd.dig("port.test")
    nslib.wait_until(dnsd.spooled, timeout=30, what="a spool file")
    dnsd.dig("exact.test")   # the same expiry within 60 s: not reported again
    dnsd.stop()              # the last flush at exit
    learned = [r for body in dnsd.spooled() for r in body["learned"]]
    assert all(body["gateway"] == "gw-test" for body in dnsd.spooled())
    by_key = {(r["entry"], r["address"]): r for r in learned}
    assert len(learned) == 2 and set(by_key) == {(1, "203.0.113.10"), (3, "203.0.113.14")}, learned
    exact = by_key[(1, "203.0.113.10")]
    assert exact["name"] == "exact.test" and exact["ttl"] == 30 and exact["ports"] == []
    assert 125 <= exact["expires"] - exact["seen"] <= 131
    assert by_key[(3, "203.0.113.14")]["ports"] == ["443/tcp", "8000-8010/tcp"]
    assert not [f for f in os.listdir(dnsd.spool) if not f.startswith("learned-")]


def test_name_and_gateway_caps(dnsd):
    dnsd.start(name_cap=2, gateway_cap=3)
    assert len(answers(dnsd.dig("pool.cap.test"))) == 4     # the answer itself is never cut
    assert len(dnsd.members("og-learn4")) == 2
    dnsd.dig("more.cap.test")
    assert len(dnsd.members("og-learn4")) == 3
    text = dnsd.scrape()
    assert metric(text, "og_dns_caps_hit_total", '{kind="name"}') == 2
    assert metric(text, "og_dns_caps_hit_total", '{kind="gateway"}') == 1
    assert metric(text, "og_dns_learned_addresses") == 3
    dnsd.stop()
    caps = {(c["name"], c["kind"]): c["hits"] for body in dnsd.spooled() for c in body["caps"]}
    assert caps == {("pool.cap.test", "name"): 2, ("more.cap.test", "gateway"): 1}


def test_aaaa_skipped_without_ipv6_and_domains_reload(dnsd):
    out = dnsd.dig("six.test", qtype="AAAA")
    assert "2001:db8::6" in out, out
    assert dnsd.members("og-learn4") == {}
    assert answers(dnsd.dig("other.test")) == ["203.0.113.20"]
    assert dnsd.members("og-learn4") == {}
    with open(dnsd.domains + ".tmp", "w") as fh:
        json.dump({"revision": 2, "domains": DOMAINS + [{"entry": 11, "name": "other.test", "ports": []}]}, fh)
    os.replace(dnsd.domains + ".tmp", dnsd.domains)
    nslib.wait_until(lambda: metric(dnsd.scrape(), "og_dns_domains") == len(DOMAINS) + 1, timeout=30,
                     what="the domains file reloaded")
    dnsd.dig("other.test")
    assert set(dnsd.members("og-learn4")) == {"203.0.113.20"}


def test_metrics_scrape_passes_promtool(dnsd):
    dnsd.dig("exact.test")
    text = dnsd.scrape()
    for name in ("og_dns_learned_total", "og_dns_expired_total", "og_dns_added_latency_seconds_bucket",
                 "og_dns_upstream_duration_seconds_count", "og_dns_unlisted_total", "og_dns_refused_internal_total"):
        assert name in text
    assert 'og_dns_added_latency_seconds_bucket{le="0.0001"}' in text
    assert metric(text, "og_dns_learned_total") == 1
    dnsd.dig("www.wild.test")
    dnsd.dig("a.b.wild.test")
    text = dnsd.scrape()
    assert metric(text, "og_dns_entry_learned_addresses", '{entry="1"}') == 1    # exact.test
    assert metric(text, "og_dns_entry_learned_addresses", '{entry="2"}') == 2    # two names under *.wild.test
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rotating_answers_accumulate_in_the_set(dnsd):
    first, second = answers(dnsd.dig("rot.test")), answers(dnsd.dig("rot.test"))
    assert len(first) == 2 and len(second) == 2 and first != second
    learned = dnsd.members("og-learn4")
    assert set(learned) == set(first) | set(second)
    assert all(100 < t <= 105 for t in learned.values())   # ttl 5 + grace 100


def test_ipv6_answers_learned_into_the_v6_set_when_enabled(dnsd):
    dnsd.start(ipv6=True)
    out = dnsd.dig("six.test", qtype="AAAA")
    assert "2001:db8::6" in out, out
    assert set(dnsd.members("og-learn6")) == {"2001:db8::6"}
    assert dnsd.members("og-learn4") == {}


def test_a_dead_first_upstream_is_skipped(dnsd):
    dnsd.start(upstreams=["203.0.113.99", UPSTREAM], upstream_timeout=0.5)
    assert answers(dnsd.dig("exact.test")) == ["203.0.113.10"]
    assert set(dnsd.members("og-learn4")) == {"203.0.113.10"}
    assert metric(dnsd.scrape(), "og_dns_upstream_errors_total", '{upstream="203.0.113.99:53"}') == 1


def test_healthz_is_ok_while_og_dns_listens_and_503_naming_a_missing_learn_set(dnsd):
    """/healthz (what og-route probes with og_route_dns): 200 "ok" on a running og-dns, not the metrics page; 503
    naming the set when a learn set is gone, 200 again once it is back (checked at most once a second: the next
    probes tell)."""
    def healthz():
        done = dnsd.gw.run(["curl", "-s", "-m", "10", "-w", "\n%{http_code}", "http://127.0.0.1:9901/healthz"],
                           check=False)
        return done.stdout.rsplit("\n", 1)

    assert healthz() == ["ok\n", "200"]
    dnsd.gw.run(["ipset", "destroy", "og-learnp4"])
    probes = []
    try:
        nslib.wait_until(lambda: probes.append(healthz()) or probes[-1][1] == "503", timeout=15, interval=0.2,
                         what="/healthz answering 503 once the set is gone")
        body = probes[-1][0]
        assert "og-learnp4" in body and "does not exist" in body, body
        # Until then (within a second of the last check) the probes were answered by that check: ok.
        assert all(probe == ["ok\n", "200"] for probe in probes[:-1]), probes
    finally:
        dnsd.gw.run(["ipset", "create", "og-learnp4", "hash:ip,port", "timeout", "3600", "counters"])
    nslib.wait_until(lambda: healthz() == ["ok\n", "200"], timeout=15, interval=0.2,
                     what="/healthz ok again once the set is back")


def test_metrics_behind_tls_and_basic_auth_with_a_web_config(dnsd):
    """og-dns's /metrics with the agent's web config (node_exporter's shape, og_webconfig): the right user over
    https 200, none or a wrong password 401, plain http refused; a bad web config stops og-dns at start (exit 2)."""
    ca = CA(os.path.join(dnsd.dir, "pki"))
    cert, key, _serial = ca.issue(["og-dns.test", "127.0.0.1"], "og-dns")
    hashed = bcrypt.hashpw(b"scrape-password", bcrypt.gensalt(4)).decode()
    web = os.path.join(dnsd.dir, "web-config.yml")
    with open(web, "w") as fh:
        yaml.safe_dump({"tls_server_config": {"cert_file": cert, "key_file": key},
                        "basic_auth_users": {"prometheus": hashed}}, fh)
    dnsd.start(metrics_web_config_file=web)
    dnsd.dig("exact.test")

    def curl(url, *args):
        done = dnsd.gw.run(["curl", "-s", "-m", "5", "-w", "\n%{http_code}"] + list(args) + [url], check=False)
        return done.returncode, done.stdout.rsplit("\n", 1)[-1], done.stdout

    url = "https://127.0.0.1:9901/metrics"
    code, status, body = curl(url, "--cacert", ca.path, "-u", "prometheus:scrape-password")
    assert (code, status) == (0, "200") and metric(body.rsplit("\n", 1)[0], "og_dns_learned_total") == 1
    assert curl(url, "--cacert", ca.path)[:2] == (0, "401")
    assert curl(url, "--cacert", ca.path, "-u", "prometheus:wrong")[:2] == (0, "401")
    assert curl("http://127.0.0.1:9901/metrics", "-u", "prometheus:scrape-password")[1] != "200"
    code, status, body = curl("https://127.0.0.1:9901/healthz", "--cacert", ca.path)   # open, as og-route probes
    assert (code, status, body) == (0, "200", "ok\n\n200")
    dnsd.stop()
    with open(web, "w") as fh:
        yaml.safe_dump({"basic_auth_users": {"prometheus": "plain-text-password"}}, fh)
    config = os.path.join(dnsd.dir, "dns.yml")
    bad = dnsd.gw.run([os.path.join(BIN, "og-dns"), "--config", config], check=False)
    assert bad.returncode == 2, bad.stderr
    assert "metrics_web_config_file" in bad.stderr and web in bad.stderr, bad.stderr


def test_a_deleted_or_narrowed_entry_closes_its_learned_addresses_at_once(dnsd):
    """Deleting an entry (or changing its ports) must refuse its addresses now, not at the end of their learned
    timeouts (TTL + grace); an address another entry's name also answered stays."""
    def reload(domains, revision):
        with open(dnsd.domains + ".tmp", "w") as fh:
            json.dump({"revision": revision, "domains": domains}, fh)
        os.replace(dnsd.domains + ".tmp", dnsd.domains)
        nslib.wait_until(lambda: "(revision %d)" % revision in open(dnsd.log).read(),
                         timeout=30, what="og-dns loaded revision %d" % revision)

    twin = {"entry": 13, "name": "twin.test", "ports": []}
    dnsd.write_zone(dict(ZONE, **{"twin.test": {"A": {"ttl": 30, "values": ["203.0.113.10"]}}}))
    try:
        reload(DOMAINS + [twin], 2)
        assert answers(dnsd.dig("exact.test")) == answers(dnsd.dig("twin.test")) == ["203.0.113.10"]
        assert answers(dnsd.dig("port.test")) == ["203.0.113.14"]
        assert "203.0.113.14,tcp:8005" in dnsd.members("og-learnp4")
        # exact.test's entry deleted (twin.test still answers its address); port.test's entry narrowed.
        narrowed = [d for d in DOMAINS if d["entry"] not in (1, 3)] + [
            {"entry": 3, "name": "port.test", "ports": ["443/tcp"]}, twin]
        reload(narrowed, 3)
        nslib.wait_until(lambda: not any(m.startswith("203.0.113.14,") for m in dnsd.members("og-learnp4")),
                         timeout=10, what="port.test's members withdrawn")
        assert "203.0.113.10" in dnsd.members("og-learn4")          # twin.test holds it
        nslib.wait_until(lambda: metric(dnsd.scrape(), "og_dns_withdrawn_total") == 2, timeout=10,
                         what="203.0.113.14's 443/tcp and 8000-8010/tcp withdrawn")
        reload([d for d in narrowed if d["entry"] != 13], 4)
        nslib.wait_until(lambda: "203.0.113.10" not in dnsd.members("og-learn4"), timeout=10,
                         what="twin.test's address withdrawn")
        nslib.wait_until(lambda: metric(dnsd.scrape(), "og_dns_withdrawn_total") == 3, timeout=10,
                         what="203.0.113.10 withdrawn too")
        assert answers(dnsd.dig("port.test")) == ["203.0.113.14"]   # asked again: learned with its new ports
        assert {m for m in dnsd.members("og-learnp4") if m.startswith("203.0.113.14,")} == {"203.0.113.14,tcp:443"}
    finally:
        dnsd.write_zone(ZONE)


def test_the_spool_names_which_addresses_answered_each_name_listed_or_not(dnsd):
    """For Blocked's names (docs/dns.md, "Answers"): the real og-dns, asked through the gateway, spools the query
    name with the end of its CNAME chain's addresses, for an unlisted name, a listed one and an alias; an answer
    without addresses (NXDOMAIN) adds nothing."""
    assert answers(dnsd.dig("other.test")) == ["203.0.113.20"]      # of no entry
    assert answers(dnsd.dig("exact.test")) == ["203.0.113.10"]      # listed
    assert answers(dnsd.dig("alias.test")) == ["203.0.113.15"]      # a CNAME chain
    assert "status: NXDOMAIN" in dnsd.dig("missing.test")
    dnsd.stop()              # the last flush at exit
    told = {}
    for body in dnsd.spooled():
        for item in body.get("answers", []):
            told.setdefault(item["name"], set()).update(item["addresses"])
    assert told == {"other.test": {"203.0.113.20"}, "exact.test": {"203.0.113.10"}, "alias.test": {"203.0.113.15"}}
