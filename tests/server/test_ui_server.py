"""The UI's server side without a browser: login throttling, sessions, CSRF, roles, traffic history.

The browser tests (tests/e2e/test_ui.py) drive the same pages in chromium against the lab.
"""

import datetime as dt
import re

import pytest

from server_app.models import Gateway, TrafficSample, db
from server_app.services import entries, traffic, users
from tests.support.serverlib import og_server
from tests.support.uilib import PW, csrf, login, make_app


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, login_max_failures=3, login_lockout=600)


def test_pages_need_a_login_and_come_back_after_it(app):
    c = app.test_client()
    r = c.get("/entries?kind=ip")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/entries")
    token = csrf(c)
    r = c.post("/login", data={"username": "ada", "password": PW, "csrf_token": token, "next": "/audit?q=x"})
    assert r.headers["Location"] == "/audit?q=x"
    for evil in ("//evil.example/", "https://evil.example/", "javascript:alert(1)"):
        c2 = app.test_client()
        token = csrf(c2)
        r = c2.post("/login", data={"username": "ada", "password": PW, "csrf_token": token, "next": evil})
        assert r.headers["Location"] == "/entries", evil


def test_failed_logins_lock_the_account_even_for_the_right_password(app):
    c = app.test_client()
    for dummy in range(3):
        r = login(c, "eve", "wrong-password")
        assert r.status_code == 401 and "wrong username or password" in r.text
    r = login(c, "eve")
    assert r.status_code == 429
    assert re.search(r"the account eve is locked after 3 failed logins until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                     r.text)
    with app.app_context():     # a new password from an admin (or the CLI) unlocks it
        assert users.ensure("eve", PW + "-new", "editor") == "updated"
    assert login(c, "eve", PW + "-new").status_code == 302


def test_one_address_trying_many_accounts_is_throttled(app):
    c = app.test_client()
    for i in range(12):     # 4 x login_max_failures, spread over accounts that don't exist
        assert login(c, "nobody%d" % i, "x" * 12, remote="198.51.100.66").status_code == 401
    r = login(c, "ada", remote="198.51.100.66")
    assert r.status_code == 429 and "too many failed logins from 198.51.100.66" in r.text
    assert login(c, "ada", remote="198.51.100.67").status_code == 302     # other addresses are not affected


def test_a_new_password_or_disabling_ends_existing_sessions(app):
    c = app.test_client()
    login(c, "vic")
    assert c.get("/entries").status_code == 200
    with app.app_context():
        users.ensure("vic", PW + "-rotated", "viewer")
    assert c.get("/entries").status_code == 302
    login(c, "vic", PW + "-rotated")
    assert c.get("/entries").status_code == 200
    with app.app_context():
        users.set_disabled(users.by_name("vic").id, True)
    assert c.get("/entries").status_code == 302
    r = login(c, "vic", PW + "-rotated")
    assert r.status_code == 403 and "the account vic is disabled" in r.text


def test_forms_need_the_csrf_token_and_the_right_role(app):
    c = app.test_client()
    login(c, "vic")
    token = csrf(c, "/entries")
    r = c.post("/entries", data={"target": "198.51.100.10", "csrf_token": token})
    assert r.status_code == 403 and "role viewer, which may not change entries" in r.text
    c = app.test_client()
    login(c, "eve")
    r = c.post("/entries", data={"target": "198.51.100.10"})
    assert r.status_code == 400 and "did not come from a page of this server" in r.text
    r = c.get("/admin/users")
    assert r.status_code == 403 and "may not administer users and tokens" in r.text
    token = csrf(c, "/entries")
    r = c.post("/entries", data={"target": "198.51.100.10", "csrf_token": token, "deletable": "on"})
    assert r.status_code == 302
    with app.app_context():
        assert [e.target for e in entries.query()[0]] == ["198.51.100.10"]
    # The API keeps its tokens and needs no CSRF token (no cookies involved).
    assert c.post("/api/v1/entries", json={"target": "198.51.100.11"}).status_code == 401


def test_pages_send_a_content_security_policy_without_inline_script(app):
    c = app.test_client()
    login(c, "ada")
    for path in ("/entries", "/gateways", "/traffic", "/audit", "/admin/users", "/admin/tokens", "/addresses"):
        r = c.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "<script>" not in r.text and "onclick" not in r.text and "onerror" not in r.text, path
    assert c.get("/nope").status_code == 404 and "<h1>Not Found</h1>" in c.get("/nope").text
    assert c.get("/api/v1/nope").json["error"]["code"] == "not_found"


def test_entries_page_paginates_and_filters_on_the_server(app):
    with app.app_context():
        entries.import_entries([{"target": "198.51.100.%d" % i, "comment": "bulk %d" % i} for i in range(120)]
                               + [{"target": "203.0.113.0/28", "deletable": False}], app.config["OG"], "test")
    c = app.test_client()
    login(c, "ada")
    first = c.get("/entries").text
    assert "121 entries, page 1 of 3" in first and first.count("<tr data-id=") == 50
    assert "page=2" in first
    last = c.get("/entries?page=3").text
    assert last.count("<tr data-id=") == 21
    only = c.get("/entries?deletable=false").text
    assert "1 entry" in only and "203.0.113.0/28" in only and "permanent" in only
    assert "1 entry" in c.get("/entries?q=bulk+117").text
    bad = c.get("/entries?deletable=maybe").text
    assert "deletable=maybe must be true or false; showing every entry" in bad


def test_counters_frames_become_minutes_of_traffic(app):
    t = traffic.Traffic()
    minute = dt.datetime(2026, 11, 23, 10, 0, 30)
    with app.app_context():
        # Increments (what agents send): added up.
        counters = {"198.51.100.10/32": {"out_bytes": 100, "in_bytes": 1000, "out_packets": 1, "in_packets": 2}}
        t.ingest("gw1", {"increments": True, "counters": counters}, now=minute)
        t.ingest("gw1", {"increments": True, "counters": {"198.51.100.10/32": {"out_bytes": 50}}}, now=minute)
        # Totals of an agent run (older agents): the first frame is the baseline, then differences; a counter
        # that went down was reset and counts whole.
        for total in (500, 800, 30):
            t.ingest("gw2", {"boot": "run-1", "counters": {"198.51.100.10/32": {"in_bytes": total}}}, now=minute)
        t.ingest("gw2", {"boot": "run-2", "counters": {"198.51.100.10/32": {"in_bytes": 7000}}}, now=minute)
        with pytest.raises(traffic.TrafficError, match="must be whole numbers"):
            t.ingest("gw1", {"increments": True, "counters": {"198.51.100.10/32": {"out_bytes": "lots"}}})
        with pytest.raises(traffic.TrafficError, match="within 0-2"):
            t.ingest("gw1", {"increments": True, "counters": {"198.51.100.10/32": {"out_bytes": -1}}})
        assert t.flush() == 2
        t.ingest("gw1", {"increments": True, "counters": {"198.51.100.10/32": {"out_bytes": 1}}}, now=minute)
        t.flush()
        rows = {(s.gateway, s.out_bytes, s.in_bytes, s.out_packets, s.in_packets)
                for s in db.session.query(TrafficSample)}
        assert rows == {("gw1", 151, 1000, 1, 2), ("gw2", 0, 330, 0, 0)}
        assert traffic.Traffic.prune(1, now=minute + dt.timedelta(days=2)) == 2


def test_the_cli_makes_users_and_refuses_weak_passwords(tmp_path):
    conf = tmp_path / "server.yml"
    conf.write_text("data_dir: %s\nsecret_key: %s\n" % (tmp_path, "k" * 32))

    def user(*args, pw):
        return og_server(conf, "user", *args, "--password-env", "PW", env={"PW": pw}, check=False)

    weak = user("ensure", "--username", "ops", "--role", "admin", pw="short")
    assert weak.returncode == 2 and "the password must have at least 10 characters" in weak.stderr
    runs = [user("ensure", "--username", "ops", "--role", "admin", pw=PW).stdout.strip() for dummy in range(2)]
    assert runs == ["created", "unchanged"]
    missing = og_server(conf, "user", "create", "--username", "x", "--role", "viewer", "--password-env", "NOPE",
                        check=False)
    assert missing.returncode == 2 and "the environment variable NOPE is not set" in missing.stderr


def test_the_chart_puts_the_current_minute_on_its_last_point():
    from server_app.ui import traffic_chart
    now = dt.datetime(2026, 11, 23, 9, 13, 17)
    since = now - dt.timedelta(hours=1)
    chart = traffic_chart([(now.replace(second=0), 4000, 9000), (since.replace(second=0), 0, 10)], since,
                          dt.timedelta(hours=1))
    out, inn = chart["out"].split(), chart["in"].split()
    assert len(out) == 61 and chart["peak"] == 9000
    assert out[-1].split(",")[1] != out[-2].split(",")[1]        # the last point is up, not on the axis
    assert float(inn[-1].split(",")[1]) == chart["y0"]           # the peak touches the top
    day = traffic_chart([(now.replace(second=0), 1, 1)], now - dt.timedelta(days=1), dt.timedelta(days=1))
    assert len(day["out"].split()) == 145 and day["bucket"] == 600


def test_resolution_errors_refusals_and_the_cap_are_shown(app):
    from server_app.models import Entry, EntryAddress
    with app.app_context():
        entry, dummy = entries.create({"target": "pool.example"}, app.config["OG"], "test")
        entry_id = entry.id
        row = db.session.get(Entry, entry_id)
        row.resolve_error, row.capped = "SERVFAIL from 10.77.0.53", True
        db.session.add(EntryAddress(entry_id=entry_id, address="10.9.9.9/32", source="resolved",
                                    refused="inside the internal network 10.0.0.0/8"))
        db.session.commit()
    c = app.test_client()
    login(c, "vic")
    page = c.get("/entries/%d" % entry_id).text
    assert "Last resolution failed: SERVFAIL from 10.77.0.53" in page
    assert 'id="capped"' in page and "more addresses than the cap" in page
    assert "refused: inside the internal network 10.0.0.0/8" in page
    listing = c.get("/entries").text
    assert ">DNS error<" in listing and ">capped<" in listing


def test_top_entries_mark_shared_bytes_and_keep_deleted_entries_by_name(app):
    with app.app_context():
        cfg = app.config["OG"]
        one = entries.create({"target": "198.51.100.20", "ports": ["80/tcp"]}, cfg, "test")[0].id
        two = entries.create({"target": "198.51.100.20", "ports": ["80/tcp", "443/tcp"]}, cfg, "test")[0].id
        gone = entries.create({"target": "203.0.113.10"}, cfg, "test")[0].id
        t = app.extensions["og_traffic"]
        t.ingest("gw1", {"increments": True, "counters": {"198.51.100.20/32 80/tcp": {"in_bytes": 2048},
                                                          "203.0.113.10/32": {"in_bytes": 1024}}})
        t.flush()
        entries.delete(gone)
    c = app.test_client()
    login(c, "vic")
    page = c.get("/traffic").text
    rows = re.findall(r'<tr data-entry-id="(\d+)">(.*?)</tr>', page, re.S)
    assert [int(i) for i, _row in rows] == [one, two, gone]
    assert ['<span class="badge warn">shared</span> 2.0 KiB' in row for _i, row in rows] == [True, True, False]
    assert '<span class="target">203.0.113.10</span> <span class="badge">deleted</span>' in rows[2][1]
    # The total counts the shared 2 KiB once.
    assert re.search(r'id="traffic-total">In this window: out <strong data-bytes="0">.*?in <strong '
                     r'data-bytes="3072">', page)
    entry = c.get("/entries/%d" % one).text
    assert 'id="shared-bytes" data-bytes="2048"' in entry
    assert re.search(r'<li><span class="target">198.51.100.20/32 80/tcp</span> also produced by '
                     r'<span class="target">198.51.100.20 \(443/tcp, 80/tcp\)</span></li>', entry)


def test_the_entry_why_and_fleet_pages_say_which_gateway_does_not_enforce_what_and_why(app):
    with app.app_context():
        entry, dummy = entries.create({"target": "2001:db8::1"}, app.config["OG"], "test")
        entry_id = entry.id
        db.session.add_all([
            Gateway(name="gw1", applied_revision=1, digest_match=True,
                    holds='{"families": [4], "internal_networks": ["10.0.0.0/8"]}'),
            Gateway(name="gw2", applied_revision=1, digest_match=False,
                    holds='{"families": [4, 6], "internal_networks": ["10.0.0.0/8"]}')])
        db.session.commit()
    c = app.test_client()
    login(c, "vic")
    badge = '<span class="badge warn not-enforced">not enforced by gw1: IPv6 is off on this gateway</span>'
    assert re.findall(r'<span class="badge warn not-enforced">[^<]*</span>', c.get("/entries/%d" % entry_id).text) \
        == [badge]
    assert re.findall(r'<span class="badge warn not-enforced">[^<]*</span>',
                      c.get("/addresses?address=2001:db8::1").text) == [badge]
    fleet = c.get("/gateways").text
    assert '<span class="badge ok">in sync; not enforced: 1 skipped: no IPv6</span>' in fleet
    # What it skips and why, named under the status (opened by a click, no script needed).
    assert re.search(r'<details class="difference" data-kind="skipped" data-reason="no_ipv6"><summary>1 skipped: no IPv6</summary>\s*'
                     r'<ul><li><span class="target">2001:db8::1/128</span>: IPv6 is off on this gateway</li></ul>',
                     fleet)
    assert ('<span class="badge warn">differs: its kernel does not hold what it should at revision 1 (0 elements, '
            '1 expected)</span>') in fleet


def test_a_wildcard_added_through_the_form_shows_it_is_learned_by_the_forwarder_only(app):
    c = app.test_client()
    login(c, "eve")
    token = csrf(c, "/entries")
    r = c.post("/entries", data={"target": "*.com", "csrf_token": token, "deletable": "on"})
    assert r.status_code == 400 and "&#39;*.com&#39; would allow a whole top-level domain" in r.text
    r = c.post("/entries", data={"target": "*.Partner.Example", "ports": "443/tcp", "csrf_token": token,
                                 "deletable": "on"})
    assert r.status_code == 302
    with app.app_context():
        entry = entries.query()[0][0]
        assert (entry.target, entry.kind, entry.wildcard, entry.next_resolve_at) == (
            "*.partner.example", "domain", True, None)
    page = c.get(r.headers["Location"]).text
    assert ("learned through the gateways' DNS forwarder only; the central resolver does not resolve "
            "wildcards") in page
    assert "never partner.example itself" in page and "Resolved</dt><dd>not yet" not in page
    assert "domain (wildcard)" in c.get("/entries").text
    why = c.get("/addresses?q=api.partner.example").text
    assert 'id="why-name"' in why and "*.partner.example" in why and "wildcard" in why
    assert "No entry covers the name partner.example" in c.get("/addresses?address=partner.example").text
