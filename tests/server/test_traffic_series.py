"""Traffic over time: downsampling (minutes for 25 hours, then hours), rates on a UTC axis ending at now, the
series API (JSON and CSV) and the traffic page's chart.

On SQLite, PostgreSQL and MariaDB (the API tests' database fixture); API answers validated against the OpenAPI
document. The counters come in as the agents send them (Traffic.ingest, then flush as the hub does).
"""

import csv
import datetime as dt
import io
import re
from html import unescape

from sqlalchemy import func, select

from server_app.models import EntryTraffic, TrafficSample, db, utcnow
from server_app.services import traffic, users
from server_app.services.traffic import Traffic
from server_app.ui import axis_top, rate_label

A, B = "198.51.100.20/32", "203.0.113.10/32 443/tcp"


def counts(out_bytes, in_bytes=0, out_packets=0, in_packets=0):
    return {"out_bytes": out_bytes, "in_bytes": in_bytes, "out_packets": out_packets, "in_packets": in_packets}


def report(app, gateway, values, now=None):
    with app.app_context():
        t = app.extensions["og_traffic"]
        t.ingest(gateway, {"increments": True, "counters": values}, now=now)
        t.flush()


def rows(app, model=TrafficSample):
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar()


def sums(app, model=TrafficSample):
    with app.app_context():
        return tuple(int(v or 0) for v in db.session.execute(
            select(*[func.sum(getattr(model, f)) for f in traffic.FIELDS])).one())


def test_rollup_keeps_every_byte_in_one_row_an_hour_past_25_hours(app, api):
    entry = api.post("/api/v1/entries", json={"target": "198.51.100.20"}).get_json()["id"]
    now = utcnow().replace(second=30, microsecond=0)
    old = (now - dt.timedelta(hours=40)).replace(minute=0, second=0)
    # Two old hours, every minute, on two gateways; and the last 10 minutes, which stay minutes.
    for k in range(120):
        report(app, "gw1", {A: counts(100, 1000, 1, 2), B: counts(7)}, now=old + dt.timedelta(minutes=k))
        report(app, "gw2", {A: counts(1)}, now=old + dt.timedelta(minutes=k))
    for k in range(10):
        report(app, "gw1", {A: counts(5, 50, 1, 1)}, now=now - dt.timedelta(minutes=k))
    before, entry_before = sums(app), sums(app, EntryTraffic)
    assert rows(app) == 120 * 3 + 10
    assert rows(app, EntryTraffic) == 120 * 2 + 10

    with app.app_context():
        removed = Traffic.rollup(now=now)
    # (gw1, A), (gw1, B), (gw2, A) keep one row per old hour; the entry's two gateways likewise.
    assert rows(app) == 2 * 3 + 10
    assert rows(app, EntryTraffic) == 2 * 2 + 10
    assert removed == (120 * 3 - 6) + (120 * 2 - 4)
    assert sums(app) == before and sums(app, EntryTraffic) == entry_before
    with app.app_context():
        hours = sorted(set(db.session.execute(select(TrafficSample.minute).where(
            TrafficSample.minute < now - dt.timedelta(hours=25))).scalars()))
        assert hours == [old, old + dt.timedelta(hours=1)]
        # Again: nothing left to roll up. A late flush into a rolled-up hour is folded in at the next run.
        assert Traffic.rollup(now=now) == 0
    report(app, "gw1", {A: counts(3)}, now=old + dt.timedelta(minutes=17))
    with app.app_context():
        assert Traffic.rollup(now=now) == 2   # one TrafficSample row and one EntryTraffic row folded in
    assert rows(app) == 2 * 3 + 10 and sums(app)[0] == before[0] + 3

    # The week's series reads the hourly rows: gw1's bytes to A in the first old hour, per second.
    body = api.get("/api/v1/traffic/series?window=7d&gateway=gw1&destination=198.51.100.20").get_json()
    assert body["bucket_seconds"] == 3600 and body["destination"] == A
    by_time = {p["time"]: p for p in body["points"]}
    first = by_time[old.isoformat() + "Z"]
    assert (first["out_bytes"], first["in_bytes"], first["out_packets"]) == (60 * 100 + 3, 60 * 1000, 60)
    assert first["out_bytes_per_second"] == round((60 * 100 + 3) / 3600, 3)
    assert sum(p["out_bytes"] for p in body["points"]) == 120 * 100 + 3 + 10 * 5
    entry_series = api.get("/api/v1/traffic/series?window=7d&entry=%d" % entry).get_json()
    assert sum(p["out_bytes"] for p in entry_series["points"]) == 120 * 101 + 3 + 10 * 5


def test_prune_then_rollup_bound_a_week_of_history(app):
    """Beyond the retention nothing is kept; within it, old hours are one row each."""
    now = utcnow().replace(minute=30, second=0, microsecond=0)
    for hours in (24 * 8, 24 * 6, 30):
        for k in range(5):
            report(app, "gw1", {A: counts(1)}, now=now - dt.timedelta(hours=hours, minutes=k))
    with app.app_context():
        Traffic.prune(7, now=now)
        Traffic.rollup(now=now)
    assert rows(app) == 2   # the two hours within the retention, one row each
    assert sums(app)[0] == 10


def reported(points):
    """The one point holding what a test reported just now: the last, or the one before if a minute began since."""
    hits = [k for k, p in enumerate(points) if p["out_bytes"]]
    assert len(hits) == 1 and hits[0] >= len(points) - 2, hits
    return points[hits[0]]


def test_series_gives_rates_on_a_utc_axis_that_ends_at_now(app, api):
    now = utcnow()
    report(app, "gw1", {A: counts(6000, 60000, 60, 120), B: counts(600)})
    report(app, "gw2", {A: counts(60)})
    body = api.get("/api/v1/traffic/series").get_json()
    assert (body["window"], body["bucket_seconds"], body["gateway"], body["destination"]) == ("1h", 60, None, None)
    end = dt.datetime.fromisoformat(body["end"].rstrip("Z"))
    assert now <= end <= utcnow()
    times = [dt.datetime.fromisoformat(p["time"].rstrip("Z")) for p in body["points"]]
    # Every minute from the one holding now - 1 h to the one holding now, none missing.
    assert times[-1] <= end < times[-1] + dt.timedelta(minutes=1)
    assert times[0] <= end - dt.timedelta(hours=1) < times[0] + dt.timedelta(minutes=1)
    assert all(b - a == dt.timedelta(minutes=1) for a, b in zip(times, times[1:]))
    last = reported(body["points"])
    assert (last["out_bytes"], last["in_bytes"], last["out_packets"], last["in_packets"]) == (6660, 60000, 60, 120)
    assert (last["out_bytes_per_second"], last["in_bytes_per_second"], last["in_packets_per_second"]) == (
        111.0, 1000.0, 2.0)
    assert "bytes/s" in body["units"]["rates"] and body["units"]["time"] == "UTC"

    only = api.get("/api/v1/traffic/series?gateway=gw2&destination=198.51.100.20/32").get_json()
    assert reported(only["points"])["out_bytes"] == 60
    port = api.get("/api/v1/traffic/series?destination=203.0.113.10/32%20443/tcp").get_json()
    assert port["destination"] == B and reported(port["points"])["out_bytes"] == 600
    day = api.get("/api/v1/traffic/series?window=24h").get_json()
    assert day["bucket_seconds"] == 600 and len(day["points"]) in (145, 146)
    assert reported(day["points"])["out_bytes"] == 6660 and reported(day["points"])["out_bytes_per_second"] == 11.1


def test_series_csv_export(app, api):
    report(app, "gw1", {A: counts(120, 240, 2, 4)})
    response = api.get("/api/v1/traffic/series?format=csv&window=1h")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == ["time", "out_bytes_per_second", "in_bytes_per_second", "out_packets_per_second",
                              "in_packets_per_second", "out_bytes", "in_bytes", "out_packets", "in_packets"]
    assert len(table) in (61, 62) and all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:00Z$", r["time"]) for r in table)
    hits = [r for r in table if r["out_bytes"] != "0"]
    assert [(r["out_bytes"], r["out_bytes_per_second"], r["in_bytes_per_second"]) for r in hits] == [
        ("120", "2.0", "4.0")]


def test_series_refuses_bad_queries_by_name(app, api):
    def refused(query, status=400):
        response = api.get("/api/v1/traffic/series" + query)
        assert response.status_code == status, (query, response.get_json())
        return response.get_json()["error"]

    assert refused("?window=1w") == {"code": "invalid_window", "message": "window '1w' must be one of 1h, 24h, 7d"}
    assert refused("?destination=not-an-address")["code"] == "invalid_filter"
    assert "not-an-address" in refused("?destination=not-an-address")["message"]
    assert refused("?destination=198.51.100.20&entry=1")["message"] == (
        "give one of destination, entry or client, not destination and entry")
    assert refused("?entry=one")["message"] == "entry 'one' must be an entry id (a whole number)"
    assert refused("?entry=424242", 404) == {"code": "not_found",
                                             "message": "entry 424242 does not exist and never carried traffic"}
    assert refused("?format=xml")["code"] == "invalid_format"
    assert refused("?windw=1h")["code"] == "unknown_parameter"
    # The summary takes the week too.
    assert api.get("/api/v1/traffic?window=7d").get_json()["window"] == "7d"


def test_the_traffic_page_draws_the_rates_and_exports_what_it_shows(app):
    with app.app_context():
        users.create("vic", "a-long-enough-password", "viewer", created_by=("test", "system", ""))
    report(app, "gw1", {A: counts(600, 6000)})
    c = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    c.post("/login", data={"username": "vic", "password": "a-long-enough-password", "csrf_token": token})
    page = c.get("/traffic?window=24h&destination=198.51.100.20").text
    svg = re.search(r'<svg class="chart rate wide" id="rate-chart".*?</svg>', page, re.S).group(0)
    # A compact drawing for phones beside it (the page's stylesheet shows one of the two), the same points.
    compact = re.search(r'<svg class="chart rate compact" id="rate-chart-compact".*?</svg>', page, re.S).group(0)
    assert re.findall(r'<polyline points="([^"]+)"', compact)[0].count(" ") == re.findall(
        r'<polyline points="([^"]+)"', svg)[0].count(" ")
    assert '<link rel="stylesheet" href="/static/traffic.css">' in page
    # Two lines of 145-146 points (10-minute rates over the day), y ticks in bytes/s, the axis ends at now (UTC).
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert len(lines) == 2 and all(len(line.split()) in (145, 146) for line in lines)
    # Round ticks in the unit shown: 6000 B in 10 minutes is 10 B/s, so the axis goes to 10 B/s in quarters.
    assert re.findall(r'text-anchor="end" class="label">([^<]+ B/s)</text>', svg) == [
        "0 B/s", "2.5 B/s", "5 B/s", "7.5 B/s", "10 B/s"]
    assert re.search(r'id="chart-end">now: \d{4}-\d\d-\d\d \d\d:\d\d UTC</text>', svg)
    assert "to 198.51.100.20/32" in page and "Per client address" in page
    link = unescape(re.search(r'id="traffic-csv" href="([^"]+)"', page).group(1))
    assert link.startswith("/traffic.csv?") and "destination=198.51.100.20" in link and "window=24h" in link
    exported = c.get(link)
    assert exported.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(table) in (145, 146) and sum(int(r["in_bytes"]) for r in table) == 6000
    # A bad filter: the page says which and why and shows the traffic without it; the export refuses it.
    bad = c.get("/traffic?destination=nowhere").text
    assert re.search(r'id="traffic-problem" role="alert">destination &#39;nowhere&#39; is no element', bad)
    assert 'id="rate-chart"' in bad
    refused = c.get("/traffic.csv?window=1w")
    assert refused.status_code == 400 and "window &#39;1w&#39; must be one of 1h, 24h, 7d" in refused.text


def test_rate_axes_end_on_a_round_value_of_the_unit_they_show():
    assert [(axis_top(peak), [rate_label(axis_top(peak) * k / 4) for k in (1, 4)]) for peak in (
        0, 3, 900, 1023, 1500, 100000, 3 * 1024 * 1024)] == [
        (1, ["0.25 B/s", "1 B/s"]), (5, ["1.25 B/s", "5 B/s"]), (1000, ["250 B/s", "1000 B/s"]),
        (1024, ["256 B/s", "1.0 KiB/s"]), (2048, ["512 B/s", "2.0 KiB/s"]), (102400, ["25.0 KiB/s", "100.0 KiB/s"]),
        (5 * 1024 * 1024, ["1.2 MiB/s", "5.0 MiB/s"])]
