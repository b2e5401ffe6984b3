"""Traffic attribution: which entry the bytes of an element belong to, recorded when the server takes them in.

On SQLite, PostgreSQL and MariaDB (the API tests' database fixture); answers validated against the OpenAPI
document. The kernel side (which element counts a packet) is in tests/integration/test_firewall.py, the whole
path with real traffic in tests/e2e/test_traffic_attribution.py.
"""

import datetime as dt
import ipaddress

from server_app.models import EntryTraffic, db
from server_app.services import entries
from server_app.services.resolver import Answer, Resolver

ZERO = {"out_bytes": 0, "in_bytes": 0, "out_packets": 0, "in_packets": 0}


def frame(counters):
    return {"increments": True, "counters": counters}


def report(app, gateway, counters):
    """One counters frame from a gateway, flushed as the hub does."""
    with app.app_context():
        t = app.extensions["og_traffic"]
        t.ingest(gateway, frame(counters))
        t.flush()


def resolve(app, entry_id, *addresses):
    with app.app_context():
        Resolver(app).apply(entry_id, Answer("ok", [ipaddress.ip_address(a) for a in addresses], ttl=300))


def use(api, entry_id):
    response = api.get("/api/v1/entries/%d/traffic" % entry_id)
    assert response.status_code == 200
    body = response.get_json()
    return {k: body[k] for k in ("entry", "deleted", "out_bytes", "in_bytes", "shared_out_bytes", "shared_in_bytes")}


def test_shared_port_scoped_and_deleted_entries_are_attributed_exactly(app, api):
    ids = {}
    for key, body in (("plain", {"target": "198.51.100.20"}),
                      ("port", {"target": "198.51.100.20", "ports": ["80/tcp"]}),
                      ("a", {"target": "a.example.com"}), ("b", {"target": "b.example.com"})):
        ids[key] = api.post("/api/v1/entries", json=body).get_json()["id"]
    resolve(app, ids["a"], "198.51.100.20", "203.0.113.10")
    resolve(app, ids["b"], "198.51.100.20")
    # 198.51.100.20/32 is produced by three entries (plain, a, b); its port 80 by the port-scoped one alone.
    report(app, "gw1", {"198.51.100.20/32": {"out_bytes": 1000, "in_bytes": 20000, "out_packets": 10, "in_packets": 20},
                        "198.51.100.20/32 80/tcp": {"out_bytes": 300, "in_bytes": 4000, "out_packets": 3,
                                                    "in_packets": 4},
                        "203.0.113.10/32": {"out_bytes": 7, "in_bytes": 70, "out_packets": 1, "in_packets": 1}})
    report(app, "gw2", {"198.51.100.20/32 80/tcp": {"out_bytes": 1, "in_bytes": 2}})

    assert use(api, ids["port"]) == {"entry": "198.51.100.20 (80/tcp)", "deleted": False, "out_bytes": 301,
                                     "in_bytes": 4002, "shared_out_bytes": 0, "shared_in_bytes": 0}
    assert use(api, ids["plain"]) == {"entry": "198.51.100.20", "deleted": False, "out_bytes": 1000,
                                      "in_bytes": 20000, "shared_out_bytes": 1000, "shared_in_bytes": 20000}
    assert use(api, ids["a"]) == {"entry": "a.example.com", "deleted": False, "out_bytes": 1007, "in_bytes": 20070,
                                  "shared_out_bytes": 1000, "shared_in_bytes": 20000}
    assert use(api, ids["b"]) == {"entry": "b.example.com", "deleted": False, "out_bytes": 1000, "in_bytes": 20000,
                                  "shared_out_bytes": 1000, "shared_in_bytes": 20000}
    one = api.get("/api/v1/entries/%d/traffic" % ids["b"]).get_json()
    assert one["shared_with"] == {"198.51.100.20/32": ["198.51.100.20", "a.example.com"]}
    assert [(s["out_bytes"], s["in_bytes"]) for s in one["series"]] == [(1000, 20000)]
    summary = api.get("/api/v1/traffic").get_json()
    # The total counts each byte once, whatever the number of entries sharing it.
    assert summary["total"] == {"out_bytes": 1308, "in_bytes": 24072, "out_packets": 14, "in_packets": 25}
    assert [(e["entry"], e["out_bytes"] + e["in_bytes"], e["shared_out_bytes"] + e["shared_in_bytes"])
            for e in summary["entries"]] == [("a.example.com", 21077, 21000), ("198.51.100.20", 21000, 21000),
                                             ("b.example.com", 21000, 21000), ("198.51.100.20 (80/tcp)", 4303, 0)]
    assert api.get("/api/v1/traffic?gateway=gw2").get_json()["entries"] == [dict(
        ZERO, entry_id=ids["port"], entry="198.51.100.20 (80/tcp)", deleted=False, out_bytes=1, in_bytes=2,
        shared_out_bytes=0, shared_in_bytes=0)]

    # Deleted: its traffic stays its own, by name; what comes after counts for the entries that remain.
    assert api.delete("/api/v1/entries/%d" % ids["b"]).status_code == 204
    report(app, "gw1", {"198.51.100.20/32": {"in_bytes": 5}})
    assert use(api, ids["b"]) == {"entry": "b.example.com", "deleted": True, "out_bytes": 1000, "in_bytes": 20000,
                                  "shared_out_bytes": 1000, "shared_in_bytes": 20000}
    assert use(api, ids["plain"])["in_bytes"] == 20005
    gone = [e for e in api.get("/api/v1/traffic").get_json()["entries"] if e["entry_id"] == ids["b"]]
    assert [(e["entry"], e["deleted"], e["in_bytes"]) for e in gone] == [("b.example.com", True, 20000)]
    assert api.get("/api/v1/entries/%d/traffic" % ids["b"]).get_json()["shared_with"] == {}
    # An entry that never existed (or carried nothing and is gone) is a 404; a bad window a 400 naming it.
    assert api.get("/api/v1/entries/99999/traffic").status_code == 404
    bad = api.get("/api/v1/traffic?window=1w")
    assert bad.status_code == 400 and bad.get_json()["error"]["message"] == "window '1w' must be one of 1h, 24h, 7d"


def test_traffic_reported_after_its_entry_was_deleted_stays_with_the_last_holder(app, api):
    entry_id = api.post("/api/v1/entries", json={"target": "198.51.100.30"}).get_json()["id"]
    report(app, "gw1", {"198.51.100.30/32": {"in_bytes": 10}})
    assert api.delete("/api/v1/entries/%d" % entry_id).status_code == 204
    # The agent's next frame carries the bytes of the last seconds before the deletion.
    report(app, "gw1", {"198.51.100.30/32": {"in_bytes": 32}})
    assert use(api, entry_id) == {"entry": "198.51.100.30", "deleted": True, "out_bytes": 0, "in_bytes": 42,
                                  "shared_out_bytes": 0, "shared_in_bytes": 0}
    with app.app_context():
        assert db.session.query(EntryTraffic).count() == 1


def test_an_expired_entry_keeps_its_traffic_by_name(app, api):
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry_id = api.post("/api/v1/entries", json={"target": "198.51.100.31", "expires_at": soon}).get_json()["id"]
    report(app, "gw1", {"198.51.100.31/32": {"out_bytes": 3, "in_bytes": 4}})
    with app.app_context():
        assert entries.expire(now=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=2))
    assert api.get("/api/v1/entries/%d" % entry_id).status_code == 404
    assert use(api, entry_id) == {"entry": "198.51.100.31", "deleted": True, "out_bytes": 3, "in_bytes": 4,
                                  "shared_out_bytes": 0, "shared_in_bytes": 0}
