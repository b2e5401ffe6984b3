"""The DNS names of blocked destinations (docs/dns.md, "Answers"; docs/ui.md, "Blocked") on SQLite, PostgreSQL and
MariaDB: the learned frames' answers stored per gateway, address and name in the frame's transaction (a batch sent
twice changes nothing), the Blocked API's rows carrying the names their gateway's DNS answered with the destination
(most recent first, at most 5; another gateway's answers never), the name filter, "allow name" creating an audited
domain entry through the normal path, and the housekeeper's retention and cap."""

import datetime as dt
import time

import pytest

from og_kernel import og_protocol
from server_app.models import BlockedAttempt, DnsAnswer, Entry, db, utcnow
from server_app.services import answers, blocked, changelog, housekeeping, learned


def learned_frame(batch, told):
    """A learned frame of a spool file holding only answers: told is [(name, [addresses], last)]."""
    spool = {"answers": [{"name": n, "addresses": a, "last": t} for n, a, t in told]}
    return og_protocol.parse_agent_frame(og_protocol.learned(batch, spool))


def blocked_frame(*attempts):
    items = [dict({"client": "10.88.0.2", "proto": "tcp", "port": "443", "count": 1, "bytes": 60,
                   "first": int(time.time()) - 30, "last": int(time.time()) - 30, "observed": False}, **a)
             for a in attempts]
    return og_protocol.parse_agent_frame(og_protocol.blocked(items)[0])


def when(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def stored(app):
    with app.app_context():
        rows = {(r.gateway, r.address, r.name): (r.first_seen, r.last_seen) for r in db.session.query(DnsAnswer)}
        db.session.remove()
        return rows


def listed(api, query=""):
    response = api.get("/api/v1/blocked" + query, token="viewer")
    assert response.status_code == 200, response.get_json()
    return {(i["destination"], i["port"]): i["names"] for i in response.get_json()["items"]}


@pytest.fixture
def seeded(app):
    """gw1's DNS answered cdn.example with .20 and 203.0.113.9, then API.Partner.Example. with .20; gw2's DNS
    answered evil.example with .20; gw1 refused 10.88.0.2 to .20, to 203.0.113.9 and to 192.0.2.5 (no name)."""
    t = int(time.time()) - 600
    cfg = app.config["OG"]
    with app.app_context():
        result = learned.apply("gw1", learned_frame("learned-1-1-1.json", [
            ("cdn.example", ["198.51.100.20", "203.0.113.9"], t), ("API.Partner.Example.", ["198.51.100.20"], t + 10)]),
            cfg)
        assert result["answers"] == 3
        learned.apply("gw2", learned_frame("learned-1-1-1.json", [("evil.example", ["198.51.100.20"], t + 20)]), cfg)
        blocked.ingest("gw1", blocked_frame({"destination": "198.51.100.20"}, {"destination": "203.0.113.9",
                                                                               "port": "80"},
                                            {"destination": "192.0.2.5"}))
        db.session.remove()
    return t


def test_blocked_rows_carry_the_names_their_gateways_dns_answered_with_the_destination(app, api, seeded):
    t = seeded
    assert stored(app) == {
        ("gw1", "198.51.100.20", "cdn.example"): (when(t), when(t)),
        ("gw1", "203.0.113.9", "cdn.example"): (when(t), when(t)),
        ("gw1", "198.51.100.20", "api.partner.example"): (when(t + 10), when(t + 10)),
        ("gw2", "198.51.100.20", "evil.example"): (when(t + 20), when(t + 20))}
    # The most recent first; gw2's answer names no row of gw1.
    assert listed(api) == {("198.51.100.20", "443"): ["api.partner.example", "cdn.example"],
                           ("203.0.113.9", "80"): ["cdn.example"], ("192.0.2.5", "443"): []}
    with app.app_context():
        # The same batch again (its ack lost) changes nothing; a later answer moves last seen, never first seen.
        learned.apply("gw1", learned_frame("learned-1-1-1.json", [("cdn.example", ["198.51.100.20"], t)]),
                      app.config["OG"])
        learned.apply("gw1", learned_frame("learned-2-1-2.json", [("cdn.example", ["198.51.100.20"], t + 30)]),
                      app.config["OG"])
        db.session.remove()
    assert stored(app)[("gw1", "198.51.100.20", "cdn.example")] == (when(t), when(t + 30))
    assert len(stored(app)) == 4
    assert listed(api)[("198.51.100.20", "443")] == ["cdn.example", "api.partner.example"]
    # At most 5 names a row, the most recent.
    with app.app_context():
        learned.apply("gw1", learned_frame("learned-3-1-3.json", [
            ("n%d.example" % i, ["198.51.100.20"], t + 100 + i) for i in range(7)]), app.config["OG"])
        db.session.remove()
    newest_first = ["n6.example", "n5.example", "n4.example", "n3.example", "n2.example"]
    assert listed(api)[("198.51.100.20", "443")] == newest_first


def test_the_blocked_list_filters_by_name(api, seeded, monkeypatch):
    assert set(listed(api, "?name=partner")) == {("198.51.100.20", "443")}
    assert set(listed(api, "?name=CDN.example.")) == {("198.51.100.20", "443"), ("203.0.113.9", "80")}
    assert set(listed(api, "?name=*.partner.example")) == {("198.51.100.20", "443")}
    assert listed(api, "?name=*.example&destination=203.0.113.9") == {("203.0.113.9", "80"): ["cdn.example"]}
    assert listed(api, "?name=evil") == {}          # gw2's answer: no row of gw1's
    assert listed(api, "?name=c%25n") == {}          # % is itself, not a wildcard
    bad = api.get("/api/v1/blocked?name=%20cdn")
    assert bad.status_code == 400 and bad.get_json()["error"] == {
        "code": "invalid_name", "message": "name ' cdn' must be 1-255 characters without surrounding spaces: a part "
                                           "of a name (partner), or *.example.com for the names under example.com"}
    # A name standing for more addresses than a filter may (4,096, as for a network; 2 here): the fix named.
    monkeypatch.setattr(blocked, "MAX_FILTER_ADDRESSES", 2)
    wide = api.get("/api/v1/blocked?name=example")
    assert wide.status_code == 400 and wide.get_json()["error"] == {
        "code": "invalid_filter", "message": "name 'example' matches more than 2 addresses the gateways' DNS "
                                             "answered: give more of the name (cdn.partner.example rather than "
                                             "partner)"}
    assert set(listed(api, "?name=cdn")) == {("198.51.100.20", "443"), ("203.0.113.9", "80")}   # 2: still fine


def test_allow_name_creates_an_audited_domain_entry_with_the_rows_port_scope(app, api, seeded):
    with app.app_context():
        row = db.session.query(BlockedAttempt).filter_by(destination="198.51.100.20").one()
        head = changelog.head_revision()
    url = "/api/v1/blocked/%d/allow" % row.id
    assert api.post(url, token="viewer", json={"name": "cdn.example"}).status_code == 403
    other = api.post(url, token="editor", json={"name": "evil.example"})     # gw2's DNS answered it, not gw1's
    assert other.status_code == 400 and other.get_json()["error"] == {
        "code": "invalid_name", "message": "name 'evil.example' is not a name gw1's DNS answered with "
                                           "198.51.100.20; give one of api.partner.example, cdn.example"}
    wild = api.post(url, token="editor", json={"name": "*.example"})
    assert wild.status_code == 400 and "not a wildcard" in wild.get_json()["error"]["message"]
    assert api.post(url, token="editor", json={"name": 7}).status_code == 400
    assert api.post(url, token="editor", json={"name": "cdn.example", "x": 1}).status_code == 400
    with app.app_context():
        assert db.session.query(Entry).count() == 0 and changelog.head_revision() == head
    done = api.post(url, token="editor", json={"name": "CDN.example", "duration": "1w"})
    assert done.status_code == 201, done.get_json()
    entry = done.get_json()
    assert (entry["target"], entry["kind"], entry["ports"]) == ("cdn.example", "domain", ["443/tcp"])
    assert entry["expires_at"] is not None and entry["comment"] == (
        "allowed from the Blocked page: refused from 10.88.0.2 via gw1 (1 attempt); gw1's DNS answered cdn.example "
        "with 198.51.100.20")
    event = api.get("/api/v1/audit?action=entry.create").get_json()["items"][0]
    assert (event["actor"], event["object_id"]) == ("editor-test", str(entry["id"]))
    again = api.post(url, token="editor", json={"name": "cdn.example"})
    assert again.status_code == 409 and "id %d" % entry["id"] in again.get_json()["error"]["message"]
    # A row whose gateway's DNS answered nothing for it: the reason and the way out.
    with app.app_context():
        bare = db.session.query(BlockedAttempt).filter_by(destination="192.0.2.5").one().id
    none = api.post("/api/v1/blocked/%d/allow" % bare, token="editor", json={"name": "cdn.example"})
    assert none.status_code == 400 and none.get_json()["error"]["message"].endswith(
        "it answered none (it may have been pruned): allow the address instead")


def test_housekeeping_bounds_the_answers_by_retention_then_the_oldest_beyond_the_cap(app, api):
    cfg = app.config["OG"]
    cfg.update(dns_answers_max_rows=4, dns_answers_retention_days=2)
    now = int(time.time())
    with app.app_context():
        learned.apply("gw1", learned_frame("learned-1-1-1.json", [
            ("n%d.example" % i, ["198.51.100.%d" % (i + 1)], now - 100 + i) for i in range(6)] + [
            ("stale.example", ["198.51.100.99"], now - 3 * 86400)]), cfg)
        assert answers.count_rows() == 7
        housekeeping.Housekeeper(app).run_due(now=1000.0)
        db.session.remove()
    # The stale row by the retention, then n0 and n1 (the oldest last seen) by the cap of 4.
    assert sorted(n for _g, _a, n in stored(app)) == ["n%d.example" % i for i in range(2, 6)]
    with app.app_context():
        assert answers.prune(4, 2, utcnow()) == {"retention": 0, "cap": 0}
        db.session.remove()
