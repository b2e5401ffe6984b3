"""The resolver: accumulation with grace, caps, internal addresses, failures, leases, against a real dnsmasq.

The rules are tested through Resolver.apply with answers and times the test chooses (no waiting); resolve()
and the whole pass are tested against a real dnsmasq on loopback whose records the test rewrites."""

import datetime as dt
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from server_app import create_app, init_db
from server_app.models import Entry, Lease, db, utcnow
from server_app.services import changelog, entries
from server_app.services.resolver import Answer, Resolver, make_dns, resolve
from tests.support.nslib import wait_ready, wait_until


def ips(*values):
    return [ipaddress.ip_address(v) for v in values]


@pytest.fixture
def app(tmp_path):
    app = create_app(config={"data_dir": str(tmp_path), "secret_key": "s" * 32,
                             "database_url": "sqlite:///%s" % (tmp_path / "og.db"), "resolver_enabled": False,
                             "resolve_interval": 60, "resolve_min_interval": 5, "resolve_grace": 900,
                             "resolve_cap": 4})
    init_db(app)
    with app.app_context():
        yield app


def domain(target="pool.example.com", **extra):
    entry, dummy = entries.create(dict(target=target, **extra), _cfg(), "test")
    return entry.id


def _cfg():
    from flask import current_app
    return current_app.config["OG"]


def addresses(entry_id):
    entry = db.session.get(Entry, entry_id)
    return {a.address: a for a in entry.addresses}


def test_new_addresses_are_published_at_once_and_vanished_ones_after_the_grace_period(app):
    r = Resolver(app)
    eid = domain()
    t0 = utcnow()
    assert r.apply(eid, Answer("ok", ips("198.51.100.1", "198.51.100.2"), ttl=300), now=t0) is True
    assert changelog.published() == {"198.51.100.1/32", "198.51.100.2/32"}
    # .2 disappears: kept, with a deadline 900 s later.
    assert r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=300), now=t0 + dt.timedelta(seconds=60)) is False
    row = addresses(eid)["198.51.100.2/32"]
    assert row.grace_until == t0 + dt.timedelta(seconds=960)
    assert "198.51.100.2/32" in changelog.published()
    # It comes back before the deadline: simply kept.
    r.apply(eid, Answer("ok", ips("198.51.100.1", "198.51.100.2"), ttl=300), now=t0 + dt.timedelta(seconds=120))
    assert addresses(eid)["198.51.100.2/32"].grace_until is None
    # Gone again, and this time the deadline passes.
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=300), now=t0 + dt.timedelta(seconds=180))
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=300), now=t0 + dt.timedelta(seconds=1000))
    assert "198.51.100.2/32" in changelog.published()     # 180 + 900 = 1080 not reached yet
    assert r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=300), now=t0 + dt.timedelta(seconds=1081)) is True
    assert changelog.published() == {"198.51.100.1/32"}


def test_the_next_resolution_follows_the_ttl_within_the_clamp_and_wakes_for_a_deadline(app):
    r = Resolver(app)
    eid = domain()
    t0 = utcnow()
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=20), now=t0)
    assert db.session.get(Entry, eid).next_resolve_at == t0 + dt.timedelta(seconds=20)
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=1), now=t0)
    assert db.session.get(Entry, eid).next_resolve_at == t0 + dt.timedelta(seconds=5)      # min clamp
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=86400), now=t0)
    assert db.session.get(Entry, eid).next_resolve_at == t0 + dt.timedelta(seconds=60)     # the interval
    short = domain("short.example.com", grace_seconds=10)
    r.apply(short, Answer("ok", ips("198.51.100.7"), ttl=300), now=t0)
    r.apply(short, Answer("ok", [], ttl=300), now=t0)
    assert db.session.get(Entry, short).next_resolve_at == t0 + dt.timedelta(seconds=10)  # the grace deadline


def test_a_rotating_pool_accumulates_up_to_the_cap(app):
    r = Resolver(app)
    eid = domain()
    t0 = utcnow()
    pool = ["198.51.100.%d" % i for i in range(1, 9)]
    for i in range(4):
        r.apply(eid, Answer("ok", ips(*pool[2 * i:2 * i + 2]), ttl=60), now=t0 + dt.timedelta(seconds=i))
    # The cap is 4 in this app: the first four addresses stay, the rest are not taken.
    assert set(addresses(eid)) == {p + "/32" for p in pool[:4]}
    assert changelog.published() == {p + "/32" for p in pool[:4]}
    assert db.session.get(Entry, eid).capped is True
    assert entries.to_json(db.session.get(Entry, eid))["capped"] is True


def test_internal_addresses_are_recorded_but_never_published(app):
    r = Resolver(app)
    eid = domain("rebind.example.com")
    r.apply(eid, Answer("ok", ips("10.1.2.3", "127.0.0.1", "198.51.100.9", "fd00::1"), ttl=60))
    assert changelog.published() == {"198.51.100.9/32"}
    rows = addresses(eid)
    assert "10.0.0.0/8" in rows["10.1.2.3/32"].refused and "127.0.0.0/8" in rows["127.0.0.1/32"].refused
    shown = entries.to_json(db.session.get(Entry, eid))["addresses"]
    assert [a["published"] for a in shown if a["address"] == "10.1.2.3/32"] == [False]


def test_aaaa_answers_that_embed_an_internal_ipv4_address_are_refused_with_the_entry_message(app):
    r = Resolver(app)
    eid = domain("nat64.example.com")
    r.apply(eid, Answer("ok", ips("64:ff9b::a00:1", "2002:a00:1::", "64:ff9b::c633:640a"), ttl=60))
    assert changelog.published() == {"64:ff9b::c633:640a/128"}
    rows = addresses(eid)
    assert rows["64:ff9b::a00:1/128"].refused == (
        "64:ff9b::a00:1 embeds the IPv4 address 10.0.0.1 (NAT64 well-known prefix, 64:ff9b::/96), which is "
        "inside or overlaps the internal network 10.0.0.0/8; never published")
    assert rows["2002:a00:1::/128"].refused == (
        "2002:a00:1:: embeds the IPv4 address 10.0.0.1 (6to4 prefix, 2002::/16), which is "
        "inside or overlaps the internal network 10.0.0.0/8; never published")


def test_dns_failure_never_removes_and_nxdomain_removes_after_grace(app):
    r = Resolver(app)
    eid = domain()
    t0 = utcnow()
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=60), now=t0)
    for minutes in range(1, 60):
        r.apply(eid, Answer("error", error="DNS timeout"), now=t0 + dt.timedelta(minutes=minutes))
    assert changelog.published() == {"198.51.100.1/32"}
    assert db.session.get(Entry, eid).resolve_error == "DNS timeout"
    r.apply(eid, Answer("nxdomain", error="pool.example.com does not exist (NXDOMAIN)"),
            now=t0 + dt.timedelta(minutes=61))
    assert changelog.published() == {"198.51.100.1/32"}
    r.apply(eid, Answer("nxdomain", error="x"), now=t0 + dt.timedelta(minutes=61, seconds=901))
    assert changelog.published() == set()


def test_deleting_a_domain_keeps_addresses_another_entry_allows(app):
    r = Resolver(app)
    a = domain("a.example.com")
    b = domain("b.example.com")
    r.apply(a, Answer("ok", ips("198.51.100.1", "198.51.100.2"), ttl=60))
    r.apply(b, Answer("ok", ips("198.51.100.2", "198.51.100.3"), ttl=60))
    typed, dummy = entries.create({"target": "198.51.100.1"}, _cfg(), "test")
    entries.delete(a)
    assert changelog.published() == {"198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"}
    entries.delete(b)
    assert changelog.published() == {"198.51.100.1/32"}


def test_undeletable_domains_are_resolved_like_any_other(app):
    r = Resolver(app)
    eid = domain("fixed.example.com", deletable=False)
    t0 = utcnow()
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=60), now=t0)
    r.apply(eid, Answer("ok", ips("198.51.100.2"), ttl=60), now=t0 + dt.timedelta(seconds=60))
    r.apply(eid, Answer("ok", ips("198.51.100.2"), ttl=60), now=t0 + dt.timedelta(seconds=1000))
    assert changelog.published() == {"198.51.100.2/32"}


def test_one_lease_holder_and_takeover(app):
    first, second = Resolver(app), Resolver(app)
    t0 = utcnow()
    assert first.take_lease(now=t0) is True
    assert second.take_lease(now=t0 + dt.timedelta(seconds=5)) is False
    assert first.take_lease(now=t0 + dt.timedelta(seconds=10)) is True          # renews
    assert second.take_lease(now=t0 + dt.timedelta(seconds=20)) is False
    # The first stops renewing: the lease runs out 15 s after its last renewal.
    assert second.take_lease(now=t0 + dt.timedelta(seconds=26)) is True
    assert db.session.get(Lease, "resolver").holder == second.holder
    assert first.take_lease(now=t0 + dt.timedelta(seconds=27)) is False


# ---- a real DNS server ---------------------------------------------------------------------------------

def free_udp_port():
    """A port free for UDP and TCP both (dnsmasq binds the two; a port taken for TCP makes it exit with rc 2)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Dnsmasq:
    """dnsmasq on 127.0.0.1:PORT answering from a hosts file the test rewrites (SIGHUP re-reads it)."""

    def __init__(self, tmp):
        self.port = free_udp_port()
        self.hosts = os.path.join(tmp, "hosts")
        self.log = os.path.join(tmp, "queries.log")   # every query it got (--log-queries)
        self.write({})
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--addn-hosts=" + self.hosts, "--listen-address=127.0.0.1", "--bind-interfaces",
             "--port=%d" % self.port, "--local=/test/", "--local-ttl=7", "--user=root", "--group=root",
             "--log-queries", "--log-facility=" + self.log,
             "--pid-file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(lambda: resolve(self.resolver(), "probe.test", False).status == "nxdomain", self.proc,
                   "dnsmasq on 127.0.0.1:%d answering" % self.port)

    def resolver(self):
        return make_dns({"dns_servers": ["127.0.0.1:%d" % self.port], "dns_timeout": 0.5, "dns_tries": 1})

    def write(self, records):
        with open(self.hosts, "w") as fh:
            for name, addrs in records.items():
                for addr in addrs:
                    fh.write("%s %s\n" % (addr, name))

    def set(self, records):
        self.write(records)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)

    def queries(self):
        """The names asked so far, in order (from the query log)."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as fh:
            return re.findall(r" query\[\w+\] (\S+) from ", fh.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def dnsmasq(tmp_path):
    server = Dnsmasq(str(tmp_path))
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_resolve_against_a_real_dns_server(dnsmasq):
    res = dnsmasq.resolver()
    dnsmasq.set({"api.partner.test": ["198.51.100.10", "198.51.100.11", "2001:db8::10"]})
    answer = resolve(res, "api.partner.test")
    assert answer.status == "ok" and answer.ttl == 7
    assert [str(a) for a in answer.addresses] == ["198.51.100.10", "198.51.100.11", "2001:db8::10"]
    assert [str(a) for a in resolve(res, "api.partner.test", aaaa=False).addresses] == ["198.51.100.10",
                                                                                        "198.51.100.11"]
    assert resolve(res, "missing.test").status == "nxdomain"
    dnsmasq.stop()
    down = resolve(res, "api.partner.test")
    assert down.status == "error" and "api.partner.test" in down.error


def test_a_full_pass_follows_record_changes_and_survives_an_outage(app, dnsmasq):
    app.config["OG"]["dns_servers"] = ["127.0.0.1:%d" % dnsmasq.port]
    app.config["OG"]["dns_timeout"] = 0.5
    app.config["OG"]["dns_tries"] = 1
    r = Resolver(app)
    dnsmasq.set({"saas.test": ["203.0.113.10"]})
    eid = domain("saas.test")
    assert r.run_once() == 1
    assert changelog.published() == {"203.0.113.10/32"}
    dnsmasq.set({"saas.test": ["203.0.113.10", "203.0.113.11"]})
    later = utcnow() + dt.timedelta(seconds=61)
    assert r.run_once(now=later) == 1
    assert changelog.published() == {"203.0.113.10/32", "203.0.113.11/32"}
    dnsmasq.stop()
    r._dns = None
    for i in range(3):
        r.run_once(now=later + dt.timedelta(minutes=20 * (i + 1)))
    assert changelog.published() == {"203.0.113.10/32", "203.0.113.11/32"}
    assert "saas.test" in db.session.get(Entry, eid).resolve_error


def test_the_resolver_never_asks_dns_for_a_wildcard_entry(app, dnsmasq):
    app.config["OG"]["dns_servers"] = ["127.0.0.1:%d" % dnsmasq.port]
    app.config["OG"]["dns_timeout"] = 0.5
    app.config["OG"]["dns_tries"] = 1
    r = Resolver(app)
    dnsmasq.set({"saas.test": ["203.0.113.10"], "api.saas.test": ["203.0.113.20"]})
    wild = domain("*.saas.test")
    exact = domain("saas.test")
    assert r.due(utcnow()) == [(exact, "saas.test")]
    assert r.run_once() == 1
    assert r.resolve_entry_now(wild, "*.saas.test") is None
    # Even a wildcard row made due by hand (an older server, a restore) is not taken.
    db.session.get(Entry, wild).next_resolve_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()
    assert r.run_once(now=utcnow() + dt.timedelta(seconds=61)) == 1
    assert r.apply(wild, Answer("ok", ips("203.0.113.30"), ttl=60)) is False
    # The exact name was asked (dnsmasq logged it), the wildcard never.
    wait_until(lambda: dnsmasq.queries().count("saas.test") >= 2, what="dnsmasq logging both passes' queries")
    assert not [q for q in dnsmasq.queries() if "*" in q or q.endswith(".saas.test")]
    entry = db.session.get(Entry, wild)
    assert (entry.resolved_at, entry.resolve_error, entry.addresses) == (None, "", [])
    assert changelog.published() == {"203.0.113.10/32"}
    assert entries.to_json(entry)["wildcard"] is True


def test_resolver_removals_are_published_as_aged_and_operator_deletions_are_not(app):
    r = Resolver(app)
    eid = domain()
    t0 = utcnow()
    r.apply(eid, Answer("ok", ips("198.51.100.1", "198.51.100.2"), ttl=60), now=t0)
    base = changelog.head_revision()
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=60), now=t0)
    r.apply(eid, Answer("ok", ips("198.51.100.1"), ttl=60), now=t0 + dt.timedelta(seconds=901))
    add, remove, aged = changelog.delta(base, changelog.head_revision())
    assert remove == aged == ["198.51.100.2/32"]
    typed, dummy = entries.create({"target": "203.0.113.5"}, _cfg(), "test")
    base = changelog.head_revision()
    entries.delete(typed.id)
    assert changelog.delta(base, changelog.head_revision()) == ([], ["203.0.113.5/32"], [])
    # Re-added after ageing out and then deleted by an operator: the last removal decides.
    base = changelog.head_revision()
    r.apply(eid, Answer("ok", ips("198.51.100.1", "198.51.100.2"), ttl=60), now=t0 + dt.timedelta(seconds=902))
    entries.delete(eid)
    add, remove, aged = changelog.delta(base, changelog.head_revision())
    assert add == [] and remove == ["198.51.100.1/32"] and aged == []


def test_the_resolver_loop_recovers_by_itself_after_a_database_outage_past_its_backoff_cap(
        postgres, dnsmasq, tmp_path):
    url = postgres.create_database()
    app = create_app(config={"data_dir": str(tmp_path), "secret_key": "s" * 32, "database_url": url,
                             "dns_servers": ["127.0.0.1:%d" % dnsmasq.port], "dns_timeout": 0.5, "dns_tries": 1,
                             "resolve_interval": 5, "resolve_min_interval": 1})
    init_db(app)
    dnsmasq.set({"db.test": ["198.51.100.61"]})
    with app.app_context():
        entries.create({"target": "db.test"}, app.config["OG"], "test")

    def published():
        with app.app_context():
            try:
                return changelog.published()
            finally:
                db.session.remove()

    resolver = app.extensions["og_resolver"]
    resolver.start()
    try:
        wait_until(lambda: published() == {"198.51.100.61/32"}, timeout=15, what="first resolution")
        postgres.stop()
        dnsmasq.set({"db.test": ["198.51.100.61", "198.51.100.62"]})
        errors = resolver.stats["errors"]
        # Six failed passes (retries after 1, 2, 4, 8 and then the 10 s cap: about 35 s) prove it keeps trying
        # at its cap instead of giving up; the outage was a fixed minute before, which proved no more.
        wait_until(lambda: resolver.stats["errors"] >= errors + 6, timeout=180, interval=0.5,
                   what="six failed resolver passes while the database is down")
        assert resolver._thread.is_alive()
        postgres.start()
        wait_until(lambda: published() == {"198.51.100.61/32", "198.51.100.62/32"}, timeout=30,
                   what="resolution after the database came back")
    finally:
        resolver.stop()
        with app.app_context():
            db.engine.dispose()


class PoolDNS:
    """A real DNS server on 127.0.0.1 (UDP, dnspython) that answers each A query with a different random subset
    of a pool, as S3 and large CDNs do; AAAA queries get no records."""

    def __init__(self, name, pool, per_answer):
        import random
        import socket as socketlib
        import threading

        import dns.message
        import dns.rrset
        self.pool, self.per_answer, self.queries = list(pool), per_answer, 0
        self.sock = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        rng = random.Random(7)

        def serve():
            while not self.stop.is_set():
                try:
                    data, peer = self.sock.recvfrom(4096)
                except OSError:
                    continue
                query = dns.message.from_wire(data)
                response = dns.message.make_response(query)
                question = query.question[0]
                if question.rdtype == dns.rdatatype.A and question.name.to_text().rstrip(".") == name:
                    self.queries += 1
                    response.answer.append(dns.rrset.from_text_list(
                        question.name, 30, "IN", "A", rng.sample(self.pool, self.per_answer)))
                self.sock.sendto(response.to_wire(), peer)
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_a_name_answering_a_rotating_subset_accumulates_the_union_up_to_the_cap(app):
    pool = ["198.51.100.%d" % i for i in range(1, 9)]          # 8 addresses, 2 per answer
    server = PoolDNS("pool.test", pool, 2)
    try:
        app.config["OG"].update(dns_servers=["127.0.0.1:%d" % server.port], dns_timeout=1.0, dns_tries=1,
                                resolve_cap=6, resolve_grace=86400)
        r = Resolver(app)
        eid = domain("pool.test")
        t0 = utcnow()
        sizes = []
        for i in range(80):
            r.run_once(now=t0 + dt.timedelta(seconds=31 * (i + 1)))   # each pass is due (TTL 30 s)
            sizes.append(len(addresses(eid)))
            if sizes[-1] == 6 and db.session.get(Entry, eid).capped:
                break
        assert server.queries >= 3 and sizes == sorted(sizes)           # it only grows
        held = set(addresses(eid))
        assert len(held) == 6 and held <= {p + "/32" for p in pool}      # the union, stopped at the cap
        assert changelog.published() == held
        assert db.session.get(Entry, eid).capped is True                 # and the entry says so
        assert "og_server_entries_capped 1.0" in app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        server.close()
