"""The refused attempts gateways report (services/blocked.py) and observe mode, through the API on SQLite,
PostgreSQL and MariaDB: frames summed per (gateway, client, destination, port, observed), newest and busiest
first, filters, "allow" creating an audited entry, retention by age and by row cap, and the gateways' mode
(docs/ui.md, "Blocked"; docs/protocol.md, "blocked" and "mode")."""

import datetime as dt

import pytest

from sqlalchemy import event

from og_kernel import og_protocol
from server_app.models import BlockedAttempt, Gateway, db, utcnow
from server_app.services import blocked, changelog, gateways

T0 = 1796000000   # 2026-11-30T...Z, epoch seconds


def frame(*attempts, mode="enforce"):
    items = [dict({"proto": "tcp", "port": "80", "count": 1, "bytes": 60 * a.get("count", 1), "observed": False},
                  **a) for a in attempts]
    return og_protocol.parse_agent_frame(og_protocol.blocked(items, mode)[0])


def at(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def test_frames_are_summed_per_client_destination_and_port_newest_and_busiest_first(api, app):
    now = at(T0 + 600)
    with app.app_context():
        assert blocked.ingest("gw1", frame(
            {"client": "10.88.0.2", "destination": "198.51.100.20", "count": 2, "first": T0, "last": T0 + 10},
            {"client": "10.88.0.3", "destination": "198.51.100.20", "count": 1, "first": T0 + 5, "last": T0 + 5},
            {"client": "10.88.0.2", "destination": "203.0.113.9", "port": "443", "count": 9, "first": T0,
             "last": T0 + 1}), now=now) == 3
        # The next frame of the same element adds to it and widens first/last; gw2's attempt is a row of its own.
        blocked.ingest("gw1", frame({"client": "10.88.0.2", "destination": "198.51.100.20", "count": 3,
                                     "first": T0 - 60, "last": T0 + 300}), now=now)
        blocked.ingest("gw2", frame({"client": "10.88.0.2", "destination": "198.51.100.20", "count": 1,
                                     "first": T0 + 400, "last": T0 + 400, "observed": True}, mode="observe"),
                       now=now)
        assert db.session.query(BlockedAttempt).count() == 4
    body = api.get("/api/v1/blocked", token="viewer").get_json()
    assert body["total"] == 4 and body["sort"] == "newest"
    assert [(i["gateway"], i["client"], i["destination"], i["port"], i["count"], i["observed"])
            for i in body["items"]] == [
        ("gw2", "10.88.0.2", "198.51.100.20", "80", 1, True),
        ("gw1", "10.88.0.2", "198.51.100.20", "80", 5, False),
        ("gw1", "10.88.0.3", "198.51.100.20", "80", 1, False),
        ("gw1", "10.88.0.2", "203.0.113.9", "443", 9, False),
    ]
    merged = body["items"][1]
    assert (merged["first_seen"], merged["last_seen"], merged["bytes"]) == (
        at(T0 - 60).isoformat() + "Z", at(T0 + 300).isoformat() + "Z", 300)
    assert merged["entry"] == {"target": "198.51.100.20", "ports": ["80/tcp"]}
    busiest = api.get("/api/v1/blocked?sort=busiest").get_json()["items"]
    assert [i["count"] for i in busiest] == [9, 5, 1, 1]
    # Filters: client, gateway, destination (an address or a network), observed; combined.
    assert api.get("/api/v1/blocked?client=10.88.0.3").get_json()["total"] == 1
    assert api.get("/api/v1/blocked?client=10.88.0.0/24&gateway=gw1").get_json()["total"] == 3
    assert api.get("/api/v1/blocked?destination=203.0.113.9").get_json()["items"][0]["count"] == 9
    assert api.get("/api/v1/blocked?destination=198.51.100.16/28&observed=false").get_json()["total"] == 2
    assert [i["gateway"] for i in api.get("/api/v1/blocked?observed=true").get_json()["items"]] == ["gw2"]
    page = api.get("/api/v1/blocked?per_page=2&page=2").get_json()
    assert (page["total"], len(page["items"])) == (4, 2)


@pytest.mark.parametrize("query, code, words", [
    ("client=10.88.0", "invalid_filter", "client '10.88.0' must be an IP address such as 198.51.100.20"),
    ("destination=10.0.0.0/8", "invalid_filter", "destination network 10.0.0.0/8 is wider than 4,096 addresses"),
    ("observed=yes", "invalid_observed", "observed 'yes' must be true"),
    ("sort=oldest", "invalid_sort", "sort 'oldest' must be one of newest, busiest"),
    ("clients=10.88.0.2", "unknown_parameter", "unknown query parameter(s) 'clients'"),
])
def test_bad_filters_are_a_400_naming_the_value(api, query, code, words):
    response = api.get("/api/v1/blocked?" + query)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code and words in response.get_json()["error"]["message"]


def test_a_frame_with_a_bad_address_is_refused_whole(app):
    with app.app_context():
        with pytest.raises(og_protocol.ProtocolError) as exc:
            blocked.ingest("gw1", frame({"client": "10.88.0.2", "destination": "198.51.100.20", "first": T0},
                                        {"client": "10.88.0.2", "destination": "not-an-ip", "first": T0}))
        assert str(exc.value) == "blocked destination 'not-an-ip' is not an IP address"
        assert db.session.query(BlockedAttempt).count() == 0


def test_allow_creates_the_entry_through_the_normal_path_audited(api, app):
    with app.app_context():
        blocked.ingest("gw1", frame(
            {"client": "10.88.0.2", "destination": "198.51.100.20", "port": "8443", "first": T0},
            {"client": "10.88.0.2", "destination": "203.0.113.9", "proto": "icmp", "port": "echo-request",
             "first": T0}))
        ids = {r.destination: r.id for r in db.session.query(BlockedAttempt)}
        head = changelog.head_revision()
    # A viewer may look but not allow.
    assert api.post("/api/v1/blocked/%d/allow" % ids["198.51.100.20"], token="viewer",
                    json={"duration": "1h"}).status_code == 403
    before = utcnow()
    response = api.post("/api/v1/blocked/%d/allow" % ids["198.51.100.20"], token="editor", json={"duration": "1h"})
    assert response.status_code == 201
    entry = response.get_json()
    assert (entry["target"], entry["ports"], entry["revision"]) == ("198.51.100.20", ["8443/tcp"], head + 1)
    expires = dt.datetime.fromisoformat(entry["expires_at"].rstrip("Z"))
    assert dt.timedelta(minutes=59) < expires - before <= dt.timedelta(hours=1, seconds=5)
    assert "refused from 10.88.0.2 via gw1" in entry["comment"]
    event = api.get("/api/v1/audit?action=entry.create").get_json()["items"][0]
    assert event["actor"] == "editor-test" and event["object_id"] == str(entry["id"])
    # ICMP: the whole address, permanent.
    icmp = api.post("/api/v1/blocked/%d/allow" % ids["203.0.113.9"], token="editor", json={}).get_json()
    assert (icmp["target"], icmp["ports"], icmp["expires_at"]) == ("203.0.113.9", [], None)
    # Allowing the same row again: the entry exists (409 naming it); nothing is half-applied.
    again = api.post("/api/v1/blocked/%d/allow" % ids["198.51.100.20"], token="editor", json={"duration": "1d"})
    assert again.status_code == 409 and "id %d" % entry["id"] in again.get_json()["error"]["message"]
    bad = api.post("/api/v1/blocked/%d/allow" % ids["198.51.100.20"], token="editor", json={"duration": "2h"})
    assert bad.status_code == 400 and bad.get_json()["error"]["message"] == (
        "duration '2h' must be one of permanent, 1h, 1d, 1w")
    assert api.post("/api/v1/blocked/99999/allow", token="editor", json={}).status_code == 404
    with app.app_context():
        assert changelog.head_revision() == head + 2


def test_an_internal_destination_is_refused_as_an_entry_with_the_reason(api, app):
    with app.app_context():
        blocked.ingest("gw1", frame({"client": "10.88.0.2", "destination": "10.1.2.3", "first": T0}))
        row = db.session.query(BlockedAttempt).one()
    response = api.post("/api/v1/blocked/%d/allow" % row.id, json={"duration": "permanent"})
    assert response.status_code == 400 and "10.1.2.3" in response.get_json()["error"]["message"]


def test_retention_drops_rows_by_age_then_the_oldest_beyond_the_cap(app):
    cfg = dict(app.config["OG"], blocked_retention_days=7, blocked_max_rows=50)
    now = at(T0 + 30 * 86400)
    with app.app_context():
        old = [{"client": "10.88.0.2", "destination": "198.51.100.%d" % i, "first": T0, "last": T0}
               for i in range(1, 21)]
        recent = [{"client": "10.88.0.3", "destination": "203.0.113.%d" % i, "first": T0 + 29 * 86400 + i,
                   "last": T0 + 29 * 86400 + i} for i in range(1, 81)]
        blocked.ingest("gw1", frame(*old), now=now)
        blocked.ingest("gw1", frame(*recent), now=now)
        assert db.session.query(BlockedAttempt).count() == 100
        assert blocked.prune(cfg, now=now) == 50   # 20 older than 7 days, then the 30 seen longest ago
        left = sorted(int(r.destination.rsplit(".", 1)[1]) for r in db.session.query(BlockedAttempt))
        assert left == list(range(31, 81))
        assert blocked.prune(cfg, now=now) == 0


def test_the_mode_of_a_gateway_is_set_by_an_admin_audited_and_shown_in_the_fleet(api, app):
    with app.app_context():
        gateways.open_session("gw1", "10.0.0.1", "0.1.0", "r1", running_mode="enforce")
        db.session.add(Gateway(name="gw2"))   # an agent from before modes: said nothing
        db.session.commit()
    fleet = {g["name"]: g for g in api.get("/api/v1/gateways").get_json()["items"]}
    assert (fleet["gw1"]["mode"], fleet["gw1"]["mode_set"], fleet["gw2"]["mode"]) == ("enforce", None, "enforce")
    assert api.call("PUT", "/api/v1/gateways/gw1/mode", token="editor", json={"mode": "observe"}).status_code == 403
    bad = api.call("PUT", "/api/v1/gateways/gw1/mode", json={"mode": "audit"})
    assert bad.status_code == 400 and bad.get_json()["error"]["message"].startswith(
        "mode 'audit' must be enforce (refuse what is not allowed) or observe")
    assert api.call("PUT", "/api/v1/gateways/gw1/mode", json={"mode": "observe", "x": 1}).status_code == 400
    missing = api.call("PUT", "/api/v1/gateways/nope/mode", json={"mode": "observe"})
    assert missing.status_code == 404 and "gateway 'nope' is not known" in missing.get_json()["error"]["message"]
    done = api.call("PUT", "/api/v1/gateways/gw1/mode", json={"mode": "observe"})
    assert done.status_code == 200
    assert done.get_json() == {"name": "gw1", "mode": "observe", "before": "enforce", "running_mode": "enforce"}
    event = api.get("/api/v1/audit?action=gateway.mode").get_json()["items"][0]
    assert (event["object_id"], event["before"], event["after"]) == ("gw1", {"mode": "enforce"},
                                                                     {"mode": "observe"})
    assert {g["name"]: g["mode_set"] for g in api.get("/api/v1/gateways").get_json()["items"]} == {
        "gw1": "observe", "gw2": None}
    with app.app_context():
        assert gateways.modes() == {"gw1": "observe"}


def test_busiest_is_count_then_newest_then_id_refused_and_observed_apart_filters_and_pages_alike(api, app):
    """The busiest ordering, pinned: count first, ties by last attempt, ties of both by the later row (id), refused
    and observed rows apart or together, with the filters and across pages; and on SQLite one index walk serves it
    (migration 0013: no sort of every row of the busiest counts)."""
    now = at(T0 + 3600)
    # (gateway, client, destination, count, last, observed): counts tied, and count and last tied, in both kinds.
    made = [("gw1", "10.88.0.2", "198.51.100.1", 3, T0 + 10, False), ("gw1", "10.88.0.3", "198.51.100.2", 3, T0 + 20,
            False), ("gw2", "10.88.0.2", "198.51.100.3", 3, T0 + 20, False), ("gw1", "10.88.0.4", "198.51.100.4", 7,
            T0 + 5, False), ("gw2", "10.88.0.5", "198.51.100.5", 1, T0 + 30, False), ("gw1", "10.88.0.2",
            "198.51.100.6", 3, T0 + 20, True), ("gw2", "10.88.0.3", "198.51.100.7", 9, T0 + 1, True), ("gw1",
            "10.88.1.2", "198.51.100.8", 3, T0 + 15, False), ("gw2", "10.88.0.2", "198.51.100.9", 1, T0 + 30, True)]
    with app.app_context():
        for gateway, client, destination, count, last, observed in made:   # one frame each: ids in this order
            blocked.ingest(gateway, frame({"client": client, "destination": destination, "count": count,
                                           "first": last, "last": last, "observed": observed}), now=now)
        ids = {r.destination: r.id for r in db.session.query(BlockedAttempt)}
    rows = [dict(zip(("gateway", "client", "destination", "count", "last", "observed"), m),
                 id=ids[m[2]]) for m in made]

    def expected(keep):
        return [r["destination"] for r in sorted(filter(keep, rows), key=lambda r: (-r["count"], -r["last"], -r["id"]))]

    def got(query):
        body = api.get("/api/v1/blocked?sort=busiest&" + query, token="viewer").get_json()
        return [i["destination"] for i in body["items"]], body["total"]

    assert expected(lambda r: not r["observed"]) == ["198.51.100.4", "198.51.100.3", "198.51.100.2", "198.51.100.8",
                                                     "198.51.100.1", "198.51.100.5"]
    for query, keep in (("", lambda r: True), ("observed=false", lambda r: not r["observed"]),
                        ("observed=true", lambda r: r["observed"]), ("gateway=gw1", lambda r: r["gateway"] == "gw1"),
                        ("client=10.88.0.2", lambda r: r["client"] == "10.88.0.2"),
                        ("client=10.88.0.0/24&gateway=gw1&observed=false", lambda r: r["client"].startswith(
                            "10.88.0.") and r["gateway"] == "gw1" and not r["observed"]),
                        ("destination=198.51.100.0/28&observed=true", lambda r: r["observed"])):
        want = expected(keep)
        assert got(query) == (want, len(want)), query
    # Pages: the same ordering cut in threes, refused only.
    want = expected(lambda r: not r["observed"])
    assert [got("observed=false&per_page=3&page=%d" % page)[0] for page in (1, 2, 3)] == [want[:3], want[3:], []]
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            # The page's own query of the refused rows, busiest first: its plan, caught as it is sent.
            sent = []

            def catch(conn, cursor, statement, parameters, context, executemany):
                sent.append((statement, parameters))
            event.listen(db.engine, "before_cursor_execute", catch)
            try:
                blocked.query(observed=False, sort="busiest")
            finally:
                event.remove(db.engine, "before_cursor_execute", catch)
            statement, parameters = sent[-1]
            cursor = db.session.connection().connection.cursor()
            plan = " | ".join(r[-1] for r in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters))
            assert "ix_blocked_observed_count_last_seen" in plan and "TEMP B-TREE" not in plan, plan
