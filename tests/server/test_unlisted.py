"""The unlisted names (docs/dns.md, "Unlisted names") on SQLite, PostgreSQL and MariaDB: learned frames'
"unlisted" counts stored per gateway and name in the frame's transaction, a batch sent twice counted once, the
housekeeper's retention and cap (oldest last seen first), GET /api/v1/dns/unlisted with its sort, filters, paging
and 400s (validated against the OpenAPI document by the api fixture), the server's metrics, and "why is this
allowed" naming the gateway that learned an address."""

import datetime as dt
import re
import time

from og_kernel import og_protocol
from server_app.models import UnlistedBatch, UnlistedName, db, utcnow
from server_app.services import entries, housekeeping, learned, unlisted, users


def frame(batch, names, learned_items=()):
    """A learned frame as the agent sends a spool file: names is [(name, count, first, last)]."""
    spool = {"learned": list(learned_items),
             "unlisted": [{"name": n, "count": c, "first": f, "last": la} for n, c, f, la in names]}
    return og_protocol.parse_agent_frame(og_protocol.learned(batch, spool))


def stored(app):
    with app.app_context():
        rows = db.session.query(UnlistedName).order_by(UnlistedName.gateway, UnlistedName.name).all()
        out = {(r.gateway, r.name): (r.count, r.first_seen, r.last_seen) for r in rows}
        db.session.remove()
        return out


def when(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def test_frames_count_per_gateway_and_name_once_per_batch(app):
    cfg = app.config["OG"]
    t = int(time.time()) - 100
    with app.app_context():
        r1 = learned.apply("gw1", frame("learned-1-1-1.json", [("Other.Example.", 3, t, t + 5),
                                                               ("_sip._tcp.example", 1, t, t), (".", 2, t, t + 1)]),
                           cfg)
        assert r1["unlisted"] == 6
        # Same name on another gateway is a row of its own; a second batch adds to the first's row.
        learned.apply("gw2", frame("learned-1-1-1.json", [("other.example", 1, t + 1, t + 1)]), cfg)
        r2 = learned.apply("gw1", frame("learned-2-1-2.json", [("other.example", 4, t + 10, t + 20)]), cfg)
        assert r2["unlisted"] == 4
        # At least once: the same batch again (its ack lost) adds nothing.
        assert learned.apply("gw1", frame("learned-2-1-2.json", [("other.example", 4, t + 10, t + 20)]),
                             cfg)["unlisted"] == 0
        db.session.remove()
    assert stored(app) == {
        ("gw1", "."): (2, when(t), when(t + 1)),
        ("gw1", "_sip._tcp.example"): (1, when(t), when(t)),
        ("gw1", "other.example"): (7, when(t), when(t + 20)),
        ("gw2", "other.example"): (1, when(t + 1), when(t + 1))}
    # A gateway's clock ahead of the server's: its times are taken as the server's now, at the latest.
    with app.app_context():
        learned.apply("gw3", frame("learned-9-1-1.json", [("future.example", 1, t + 10 ** 6, t + 10 ** 6)]), cfg)
        row = db.session.query(UnlistedName).filter_by(gateway="gw3").one()
        assert row.last_seen <= utcnow()
        db.session.remove()


def test_only_the_newest_batches_of_a_gateway_are_remembered(app):
    cfg = app.config["OG"]
    t = int(time.time())
    with app.app_context():
        for i in range(unlisted.KEEP_BATCHES + 10):
            learned.apply("gw1", frame("learned-%d-1-%d.json" % (i, i), [("a.example", 1, t, t)]), cfg)
        learned.apply("gw2", frame("learned-0-1-0.json", [("a.example", 1, t, t)]), cfg)
        kept = [b for (b,) in db.session.query(UnlistedBatch.batch).filter_by(gateway="gw1")]
        assert len(kept) == unlisted.KEEP_BATCHES and "learned-%d-1-%d.json" % (73, 73) in kept
        assert db.session.query(UnlistedBatch).filter_by(gateway="gw2").count() == 1
        assert db.session.query(UnlistedName).filter_by(gateway="gw1").one().count == unlisted.KEEP_BATCHES + 10
        db.session.remove()


def test_housekeeping_prunes_by_retention_then_the_oldest_last_seen_beyond_the_cap(app):
    cfg = app.config["OG"]
    cfg.update(dns_unlisted_max_rows=5, dns_unlisted_retention_days=2)
    now = int(time.time())
    old = now - 3 * 86400
    names = [("n%d.example" % i, 1, now - 100 + i, now - 100 + i) for i in range(8)] + [
        ("stale.example", 9, old, old)]
    with app.app_context():
        learned.apply("gw1", frame("learned-1-1-1.json", names), cfg)
        keeper = housekeeping.Housekeeper(app)
        keeper.run_due(now=1000.0)
        db.session.remove()
    # The stale row by the retention, then n0-n2 (the oldest last seen) by the cap of 5.
    assert sorted(n for _g, n in stored(app)) == ["n%d.example" % i for i in range(3, 8)]
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'og_server_dns_unlisted_pruned_total{reason="retention"} 1.0' in text
    assert 'og_server_dns_unlisted_pruned_total{reason="cap"} 3.0' in text
    assert "og_server_dns_unlisted_names 5.0" in text


def test_the_unlisted_endpoint_sorts_filters_pages_and_refuses_bad_values(app, api):
    cfg = app.config["OG"]
    t = int(time.time()) - 3600
    with app.app_context():
        learned.apply("gw1", frame("learned-1-1-1.json", [
            ("a.partner.example", 10, t, t + 10), ("b.partner.example", 1, t, t + 30),
            ("partner.example", 5, t, t + 20), ("x_y.other.example", 2, t, t + 40)]), cfg)
        learned.apply("gw2", frame("learned-1-1-1.json", [("c.partner.example", 7, t, t + 50)]), cfg)
        db.session.remove()

    def names(query, token="viewer"):
        response = api.get("/api/v1/dns/unlisted" + query, token=token)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        return [(i["gateway"], i["name"], i["count"]) for i in body["items"]], body

    got, body = names("")
    assert [n for _g, n, _c in got] == ["c.partner.example", "x_y.other.example", "b.partner.example",
                                        "partner.example", "a.partner.example"]          # newest first
    assert (body["total"], body["sort"], body["max_rows"], body["retention_days"]) == (5, "newest", 100000, 7)
    assert body["items"][0]["last_seen"] == when(t + 50).isoformat() + "Z"
    assert [c for _g, _n, c in names("?sort=busiest")[0]] == [10, 7, 5, 2, 1]
    assert names("?gateway=gw2")[0] == [("gw2", "c.partner.example", 7)]
    # *.partner.example: the names under it, not partner.example itself; a plain value is a substring.
    assert sorted(n for _g, n, _c in names("?name=*.Partner.Example")[0]) == [
        "a.partner.example", "b.partner.example", "c.partner.example"]
    assert sorted(n for _g, n, _c in names("?name=partner")[0]) == [
        "a.partner.example", "b.partner.example", "c.partner.example", "partner.example"]
    assert names("?name=x_y")[0] == [("gw1", "x_y.other.example", 2)]     # _ is no wildcard of LIKE
    assert names("?name=xay")[0] == []
    since = when(t + 30).isoformat() + "Z"
    assert [n for _g, n, _c in names("?since=" + since)[0]] == [
        "c.partner.example", "x_y.other.example", "b.partner.example"]
    page, body = names("?sort=busiest&per_page=2&page=2")
    assert ([c for _g, _n, c in page], body["total"], body["page"]) == ([5, 2], 5, 2)

    for query, code, named in (("?sort=oldest", "invalid_sort", "sort=oldest"),
                               ("?since=yesterday", "invalid_time", "since=yesterday"),
                               ("?name=" + "a" * 256, "invalid_name", "a" * 40),
                               ("?name=%20x", "invalid_name", "' x'"),
                               ("?per_page=0", "invalid_page", "per_page"),
                               ("?names=x", "unknown_parameter", "'names'")):
        response = api.get("/api/v1/dns/unlisted" + query, token="viewer")
        assert response.status_code == 400, query
        error = response.get_json()["error"]
        assert error["code"] == code and named in error["message"], (query, error)
    assert api.get("/api/v1/dns/unlisted", token=None).status_code == 401


def test_why_names_the_gateway_that_learned_an_address(app, api):
    cfg = app.config["OG"]
    entry = api.post("/api/v1/entries", json={"target": "*.cdn.example"}).get_json()
    typed = api.post("/api/v1/entries", json={"target": "203.0.113.0/24"}).get_json()
    later = int(time.time()) + 600
    with app.app_context():
        learned.apply("gw1", frame("learned-1-1-1.json", [], [
            {"entry": entry["id"], "name": "a.cdn.example", "address": "203.0.113.90", "ports": [], "ttl": 300,
             "expires": later, "seen": int(time.time())}]), cfg)
        db.session.remove()
    why = api.get("/api/v1/addresses/203.0.113.90", token="viewer").get_json()
    by_entry = {i["entry_id"]: i for i in why["entries"]}
    item = by_entry[entry["id"]]
    assert (item["source"], item["learned_via"], item["through"]) == ("learned", "gw1", "learned through gw1's DNS")
    assert item["expires_at"] == when(later).isoformat() + "Z" == item["until"]
    assert item["since"] and item["last_seen"]
    other = by_entry[typed["id"]]
    assert (other["learned_via"], other["expires_at"], other["through"]) == (None, None, "the entry's own address")
    with app.app_context():   # the UI page says it too
        page = entries.why("203.0.113.90", cfg)
        assert page["entries"][0]["through"] == "learned through gw1's DNS"
        db.session.remove()


def test_the_why_page_says_learned_through_the_gateways_dns(app):
    cfg = app.config["OG"]
    later = int(time.time()) + 600
    with app.app_context():
        users.create("vic", "a-long-enough-password", "viewer", created_by=("test", "system", ""))
        entry = entries.create({"target": "*.cdn.example"}, cfg, "test")[0]
        learned.apply("gw2", frame("learned-1-1-1.json", [], [
            {"entry": entry.id, "name": "a.cdn.example", "address": "203.0.113.91", "ports": [], "ttl": 300,
             "expires": later, "seen": int(time.time())}]), cfg)
        db.session.remove()
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "vic", "password": "a-long-enough-password", "csrf_token": token})
    page = client.get("/addresses?address=203.0.113.91").text
    assert '<span class="through">learned through gw2&#39;s DNS</span>' in page
    assert "expires " + when(later).strftime("%Y-%m-%d %H:%M:%S") + " UTC" in page    # the UI's one time format
