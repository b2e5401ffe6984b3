"""Traffic per client address: clients frames stored per (gateway, client, minute), rolled up into hours past
25 hours and pruned with the rest; the top clients (JSON and CSV) and the per-client series.

On SQLite, PostgreSQL and MariaDB (the API tests' database fixture); API answers validated against the OpenAPI
document. The frames come in as the agents send them (og_protocol.clients, parsed, Traffic.ingest_clients, then
flush as the hub does). The kernel side is in tests/integration/test_firewall.py, the whole path with a real
gateway in tests/agent/test_agent_clients.py.
"""

import csv
import datetime as dt
import io
import re
from html import unescape

import pytest
from sqlalchemy import func, select

from og_kernel import og_protocol
from server_app.models import ClientTraffic, db, utcnow
from server_app.services import traffic, users
from server_app.services.traffic import Traffic, TrafficError
from tests.support.uilib import PW, login


def report(app, gateway, uses, now=None):
    """One clients frame {client: (out_bytes, in_bytes, out_packets, in_packets)} through the wire format."""
    items = [og_protocol.ClientUse(c, ob, op, ib, ip) for c, (ob, ib, op, ip) in uses.items()]
    with app.app_context():
        t = app.extensions["og_traffic"]
        for raw in og_protocol.clients(1.0, items):
            t.ingest_clients(gateway, og_protocol.parse_agent_frame(raw), now=now)
        t.flush()


def rows(app):
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(ClientTraffic)).scalar()


def sums(app):
    with app.app_context():
        return tuple(int(v or 0) for v in db.session.execute(
            select(*[func.sum(getattr(ClientTraffic, f)) for f in traffic.FIELDS])).one())


def test_increments_add_up_per_gateway_client_and_minute(app, api):
    now = utcnow().replace(second=10, microsecond=0)
    report(app, "gw1", {"10.88.0.2": (100, 1000, 1, 2), "10.88.0.3": (5, 0, 1, 0)}, now=now)
    report(app, "gw1", {"10.88.0.2": (1, 10, 1, 1)}, now=now + dt.timedelta(seconds=15))
    report(app, "gw2", {"10.88.0.2": (7, 70, 1, 1)}, now=now)
    # An IPv6 client is stored by its canonical address; a client that carried nothing costs no row.
    report(app, "gw1", {"fd00:88:0::0002": (9, 9, 1, 1), "10.88.0.4": (0, 0, 0, 0)}, now=now)
    assert rows(app) == 4
    with app.app_context():
        got = {(r.gateway, r.client): (r.out_bytes, r.in_bytes, r.out_packets, r.in_packets)
               for r in db.session.execute(select(ClientTraffic)).scalars()}
    assert got == {("gw1", "10.88.0.2"): (101, 1010, 2, 3), ("gw1", "10.88.0.3"): (5, 0, 1, 0),
                   ("gw2", "10.88.0.2"): (7, 70, 1, 1), ("gw1", "fd00:88::2"): (9, 9, 1, 1)}
    body = api.get("/api/v1/traffic/clients").get_json()
    assert body["window"] == "1h" and body["gateway"] is None and body["limit"] == 20
    assert [(c["client"], c["out_bytes"], c["in_bytes"], c["out_packets"], c["in_packets"])
            for c in body["clients"]] == [("10.88.0.2", 108, 1080, 3, 4), ("fd00:88::2", 9, 9, 1, 1),
                                          ("10.88.0.3", 5, 0, 1, 0)]
    assert body["clients"][0]["bytes_per_second"] == round(1188 / 3600, 3)
    only = api.get("/api/v1/traffic/clients?gateway=gw2&window=7d").get_json()
    assert [(c["client"], c["out_bytes"]) for c in only["clients"]] == [("10.88.0.2", 7)]
    top = api.get("/api/v1/traffic/clients?limit=1").get_json()
    assert [c["client"] for c in top["clients"]] == ["10.88.0.2"]


def test_a_client_that_is_no_address_is_refused_and_nothing_of_the_frame_is_kept(app):
    frame = og_protocol.Clients((og_protocol.ClientUse("10.88.0.2", 5), og_protocol.ClientUse("10.88.0.300", 5)))
    with app.app_context():
        t = app.extensions["og_traffic"]
        with pytest.raises(TrafficError) as exc:
            t.ingest_clients("gw1", frame)
        assert str(exc.value) == "clients frame: client '10.88.0.300' is no IP address"
        t.flush()
    assert rows(app) == 0


def test_rollup_and_prune_keep_every_byte_of_a_client_within_the_retention(app, api):
    now = utcnow().replace(second=30, microsecond=0)
    old = (now - dt.timedelta(hours=40)).replace(minute=0, second=0)
    for k in range(120):
        report(app, "gw1", {"10.88.0.2": (100, 1000, 1, 2), "10.88.0.3": (7, 0, 1, 0)},
               now=old + dt.timedelta(minutes=k))
    for k in range(10):
        report(app, "gw1", {"10.88.0.2": (5, 50, 1, 1)}, now=now - dt.timedelta(minutes=k))
    report(app, "gw1", {"10.88.0.9": (1, 1, 1, 1)}, now=now - dt.timedelta(days=8))
    before = sums(app)
    assert rows(app) == 120 * 2 + 10 + 1
    with app.app_context():
        Traffic.rollup(now=now)
    # Each of the two clients keeps one row per old hour; the last 10 minutes stay minutes.
    assert rows(app) == 1 + 2 * 2 + 10
    assert sums(app) == before
    week = api.get("/api/v1/traffic/series?window=7d&client=10.88.0.2").get_json()
    assert week["client"] == "10.88.0.2" and week["bucket_seconds"] == 3600
    by_time = {p["time"]: p for p in week["points"]}
    first = by_time[old.isoformat() + "Z"]
    assert (first["out_bytes"], first["in_bytes"], first["in_packets"]) == (6000, 60000, 120)
    assert first["in_bytes_per_second"] == round(60000 / 3600, 3)
    with app.app_context():
        Traffic.prune(7, now=now)
    assert rows(app) == 2 * 2 + 10   # the 8-day-old row is gone
    assert sums(app)[0] == before[0] - 1


def test_a_clients_series_and_the_exports(app, api):
    report(app, "gw1", {"10.88.0.2": (6000, 60000, 60, 120), "10.88.0.3": (600, 0, 6, 0)})
    body = api.get("/api/v1/traffic/series?client=10.88.0.2").get_json()
    assert (body["client"], body["destination"], body["entry"], body["bucket_seconds"]) == ("10.88.0.2", None, None,
                                                                                            60)
    hits = [p for p in body["points"] if p["out_bytes"]]
    assert [(p["out_bytes"], p["in_bytes"], p["out_bytes_per_second"]) for p in hits] == [(6000, 60000, 100.0)]
    assert body["units"]["time"] == "UTC"
    exported = api.get("/api/v1/traffic/series?client=10.88.0.3&format=csv")
    assert exported.mimetype == "text/csv"
    assert [r["out_bytes"] for r in csv.DictReader(io.StringIO(exported.text)) if r["out_bytes"] != "0"] == ["600"]
    top = api.get("/api/v1/traffic/clients?format=csv&window=24h")
    assert top.mimetype == "text/csv" and "traffic-clients-24h.csv" in top.headers["Content-Disposition"]
    assert list(csv.reader(io.StringIO(top.text))) == [
        ["client", "out_bytes", "in_bytes", "out_packets", "in_packets", "bytes_per_second"],
        ["10.88.0.2", "6000", "60000", "60", "120", str(round(66000 / 86400, 3))],
        ["10.88.0.3", "600", "0", "6", "0", str(round(600 / 86400, 3))]]


def test_bad_client_queries_are_refused_by_name(app, api):
    def refused(path):
        response = api.get(path)
        assert response.status_code == 400, (path, response.get_json())
        return response.get_json()["error"]

    assert refused("/api/v1/traffic/series?client=10.88.0") == {
        "code": "invalid_filter",
        "message": "client '10.88.0' is no IP address; give a client's address such as 10.88.0.2 or fd00:88::2"}
    assert refused("/api/v1/traffic/series?client=10.88.0.2&destination=198.51.100.20")["message"] == (
        "give one of destination, entry or client, not destination and client")
    assert refused("/api/v1/traffic/clients?limit=0") == {
        "code": "invalid_filter", "message": "limit '0' must be a whole number from 1 to 1000"}
    assert refused("/api/v1/traffic/clients?limit=many")["message"] == (
        "limit 'many' must be a whole number from 1 to 1000")
    assert refused("/api/v1/traffic/clients?window=1w")["code"] == "invalid_window"
    assert refused("/api/v1/traffic/clients?format=xml")["code"] == "invalid_format"
    assert refused("/api/v1/traffic/clients?client=10.88.0.2")["code"] == "unknown_parameter"


def test_the_traffic_page_lists_the_top_clients_and_draws_a_clients_series(app):
    with app.app_context():
        users.create("vic", PW, "viewer", created_by=("test", "system", ""))
    report(app, "gw1", {"10.88.0.2": (6000, 60000, 60, 120), "10.88.0.3": (600, 0, 6, 0)})
    c = app.test_client()
    assert login(c, "vic").status_code == 302
    page = c.get("/traffic?window=1h").text
    table = re.search(r'<table class="list" id="top-clients">.*?</table>', page, re.S).group(0)
    cells = [[unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
             for tr in re.findall(r"<tr data-client=.*?</tr>", table, re.S)]
    # Busiest first, bytes both ways with units, packets, the window's average rate.
    assert cells == [["10.88.0.2", "5.9 KiB", "58.6 KiB", "180", "18.33 B/s", "over time"],
                     ["10.88.0.3", "600 B", "0 B", "6", "0.17 B/s", "over time"]]
    link = unescape(re.search(r'<tr data-client="10.88.0.3">.*?<a href="([^"]+)">over time</a>', table, re.S).group(1))
    assert link == "/traffic?window=1h&client=10.88.0.3"
    one = c.get(link).text
    assert "of client 10.88.0.3" in one
    assert re.search(r'id="chart-end">now: \d{4}-\d\d-\d\d \d\d:\d\d UTC</text>', one)
    series_csv = unescape(re.search(r'id="traffic-csv" href="([^"]+)"', one).group(1))
    assert "client=10.88.0.3" in series_csv
    rows = list(csv.DictReader(io.StringIO(c.get(series_csv).text)))
    assert sum(int(r["out_bytes"]) for r in rows) == 600
    export = unescape(re.search(r'id="top-clients-csv" href="([^"]+)"', page).group(1))
    assert export == "/traffic/clients.csv?window=1h"
    exported = c.get(export)
    assert exported.mimetype == "text/csv"
    assert [r[0] for r in csv.reader(io.StringIO(exported.text))] == ["client", "10.88.0.2", "10.88.0.3"]
    # A bad client filter: the page says so and shows the traffic without it; the export refuses a bad window.
    bad = c.get("/traffic?client=nobody").text
    assert re.search(r'id="traffic-problem" role="alert">client &#39;nobody&#39; is no IP address', bad)
    assert c.get("/traffic/clients.csv?window=1w").status_code == 400


def test_a_failed_write_keeps_the_clients_rows_for_the_next_flush(app, monkeypatch):
    frame = og_protocol.Clients((og_protocol.ClientUse("10.88.0.2", 10, 1, 20, 2),))
    minute = utcnow().replace(second=0, microsecond=0)
    with app.app_context():
        t = app.extensions["og_traffic"]
        t.ingest_clients("gw1", frame, now=minute)

        def down():
            raise RuntimeError("database down")
        monkeypatch.setattr(db.session, "commit", down)
        with pytest.raises(RuntimeError):
            t.flush()
        monkeypatch.undo()
        t.ingest_clients("gw1", frame, now=minute)   # the same minute: added to the kept row
        assert t.flush() == 1
    assert rows(app) == 1 and sums(app) == (20, 40, 2, 4)
