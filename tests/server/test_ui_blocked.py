"""The Blocked page and the fleet's mode switch through the UI (Flask test client, real app, SQLite): both kinds
of attempt listed apart, filters, "allow" with CSRF creating the entry by the normal path, the mode switch
admin-only and audited (docs/ui.md, "Blocked")."""

import html
import re
import time

import pytest

from og_kernel import og_protocol
from server_app.models import BlockedAttempt, Entry, db
from server_app.services import audit, blocked, gateways, learned
from tests.support.uilib import csrf, login, make_app


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        now = int(time.time())
        items = [{"client": "10.88.0.2", "destination": "198.51.100.20", "proto": "tcp", "port": "443", "count": 4,
                  "bytes": 240, "first": now - 60, "last": now - 10, "observed": False},
                 {"client": "10.88.0.3", "destination": "203.0.113.9", "proto": "udp", "port": "53", "count": 1,
                  "bytes": 70, "first": now - 5, "last": now - 5, "observed": False},
                 {"client": "10.88.0.2", "destination": "192.0.2.77", "proto": "tcp", "port": "80", "count": 2,
                  "bytes": 120, "first": now - 30, "last": now - 20, "observed": True}]
        blocked.ingest("gw1", og_protocol.parse_agent_frame(og_protocol.blocked(items)[0]))
        gateways.open_session("gw1", "10.99.0.1", "0.1.0", "r1", running_mode="enforce")
    return app


def table(text, table_id):
    body = text.split('id="%s"' % table_id)[1].split("</table>")[0]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr data-id[^>]*>(.*?)</tr>", body, re.S)]


def test_the_page_lists_refused_and_observed_apart_newest_first_and_filters(app):
    c = app.test_client()
    login(c, "vic")
    page = c.get("/blocked")
    assert page.status_code == 200 and '>Blocked</a>' in page.text
    # Columns: last attempt, client, destination, names (tested below), port, attempts, gateway, ...
    assert [r[1:3] + r[4:7] for r in table(page.text, "refused")] == [
        ["10.88.0.3", "203.0.113.9", "53/udp", "1", "gw1"], ["10.88.0.2", "198.51.100.20", "443/tcp", "4", "gw1"]]
    assert [r[1:3] + r[4:7] for r in table(page.text, "observed")] == [["10.88.0.2", "192.0.2.77", "80/tcp", "2", "gw1"]]
    assert "Allow</button>" not in page.text            # a viewer sees, but has no allow button
    busiest = c.get("/blocked?sort=busiest")
    assert [r[5] for r in table(busiest.text, "refused")] == ["4", "1"]
    only = c.get("/blocked?client=10.88.0.2")
    assert [r[2] for r in table(only.text, "refused")] == ["198.51.100.20"]
    bad = c.get("/blocked?destination=nope")
    assert bad.status_code == 200 and "destination &#39;nope&#39; must be an IP address" in bad.text
    assert len(table(bad.text, "refused")) == 2          # the bad filter is named and dropped


def test_allow_from_the_page_creates_the_entry_and_needs_csrf(app):
    c = app.test_client()
    login(c, "eve")
    with app.app_context():
        row = db.session.query(BlockedAttempt).filter_by(destination="198.51.100.20").one()
    token = csrf(c, "/blocked")
    assert 'name="duration"' in c.get("/blocked").text
    refused = c.post("/blocked/%d/allow" % row.id, data={"duration": "1d"})
    assert refused.status_code == 400 and "Form refused" in refused.text
    done = c.post("/blocked/%d/allow" % row.id, data={"duration": "1d", "csrf_token": token,
                                                      "back": "/blocked?client=10.88.0.2"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/blocked?client=10.88.0.2")
    page = c.get("/blocked?client=10.88.0.2")
    assert "Allowed 198.51.100.20 (443/tcp) for 1 day as entry" in html.unescape(page.text)
    with app.app_context():
        entry = db.session.query(Entry).one()
        assert (entry.target, entry.ports, entry.created_by) == ("198.51.100.20", ["443/tcp"], "eve")
        assert entry.expires_at is not None
        assert audit.query(action="entry.create")[1] == 1
    again = c.post("/blocked/%d/allow" % row.id, data={"duration": "1h", "csrf_token": token})
    assert again.status_code == 409 and "exists already" in again.text and 'id="refused"' in again.text
    gone = c.post("/blocked/99999/allow", data={"duration": "1h", "csrf_token": token})
    assert gone.status_code == 404 and "blocked attempt 99999 does not exist" in gone.text


def test_the_fleet_shows_the_mode_and_an_admin_switches_it_in_one_action(app):
    c = app.test_client()
    login(c, "eve")
    page = c.get("/gateways")
    assert '<span class="badge ok">enforce</span>' in page.text and "Switch gw1" not in page.text
    assert c.post("/gateways/gw1/mode", data={"mode": "observe", "csrf_token": csrf(c, "/gateways")}).status_code \
        == 403
    admin = app.test_client()
    login(admin, "ada")
    token = csrf(admin, "/gateways")
    assert "Switch gw1 to observe</button>" in admin.get("/gateways").text
    done = admin.post("/gateways/gw1/mode", data={"mode": "observe", "csrf_token": token})
    assert done.status_code == 302
    page = admin.get("/gateways")
    assert "Gateway gw1 set to observe (was enforce)" in page.text and "Switch gw1 to enforce</button>" in page.text
    assert '<span class="badge warn">observe</span>' in page.text
    assert admin.get("/gateways.json").get_json()["items"][0]["mode"] == "observe"
    bad = admin.post("/gateways/gw1/mode", data={"mode": "audit", "csrf_token": token})
    assert bad.status_code == 400 and "mode &#39;audit&#39; must be enforce" in bad.text
    with app.app_context():
        assert [e.after for e in audit.query(action="gateway.mode")[0]] == [{"mode": "observe"}]


def test_the_page_shows_each_rows_names_filters_by_name_and_allows_a_name(app):
    """The names column (what gw1's DNS answered with the destination), the name filter, and "Allow name": a
    domain entry for the name chosen, with the row's port scope and the duration chosen, audited."""
    with app.app_context():
        now = int(time.time())
        spool = {"answers": [{"name": "cdn.example", "addresses": ["198.51.100.20"], "last": now - 50},
                             {"name": "api.partner.example", "addresses": ["198.51.100.20"], "last": now - 40},
                             {"name": "solo.example", "addresses": ["203.0.113.9"], "last": now - 40}]}
        learned.apply("gw1", og_protocol.parse_agent_frame(og_protocol.learned("learned-1-1-1.json", spool)),
                      app.config["OG"])
        row = db.session.query(BlockedAttempt).filter_by(destination="198.51.100.20").one()
    viewer = app.test_client()
    login(viewer, "vic")
    page = viewer.get("/blocked")
    assert [(r[2], r[3]) for r in table(page.text, "refused")] == [
        ("203.0.113.9", "solo.example"), ("198.51.100.20", "api.partner.example, cdn.example")]
    assert [r[3] for r in table(page.text, "observed")] == [""]
    assert '<a href="/blocked?name=cdn.example">cdn.example</a>' in page.text
    assert "Allow name</button>" not in page.text            # a viewer: no allow buttons
    only = viewer.get("/blocked?name=partner")
    assert [r[2] for r in table(only.text, "refused")] == ["198.51.100.20"] and table(only.text, "observed") == []
    bad = viewer.get("/blocked?name=" + "x" * 256)
    assert "must be 1-255 characters without surrounding spaces" in bad.text and len(table(bad.text, "refused")) == 2

    editor = app.test_client()
    login(editor, "eve")
    page = editor.get("/blocked").text
    form = page.split('data-id="%d"' % row.id)[1].split("</tr>")[0]
    assert '<select name="name" aria-label="which name to allow"><option value="api.partner.example">' in form
    assert '<button type="submit" class="small" name="allow" value="name"' in form and "Allow name</button>" in form
    assert '<input type="hidden" name="name" value="solo.example">' in page       # one name: no choice to make
    token = csrf(editor, "/blocked")
    done = editor.post("/blocked/%d/allow" % row.id, data={"duration": "1h", "csrf_token": token, "allow": "name",
                                                           "name": "cdn.example"})
    assert done.status_code == 302
    assert "Allowed cdn.example (443/tcp) for 1 hour as entry" in html.unescape(editor.get("/blocked").text)
    with app.app_context():
        entry = db.session.query(Entry).one()
        assert (entry.target, entry.kind, entry.ports, entry.created_by) == ("cdn.example", "domain", ["443/tcp"],
                                                                             "eve")
        assert entry.expires_at is not None
        assert [e.object_id for e in audit.query(action="entry.create")[0]] == [str(entry.id)]
    # The address button of the same form still allows the address, the name field notwithstanding.
    address = editor.post("/blocked/%d/allow" % row.id, data={"duration": "1h", "csrf_token": token,
                                                              "name": "cdn.example"})
    assert address.status_code == 302
    with app.app_context():
        assert sorted(e.target for e in db.session.query(Entry)) == ["198.51.100.20", "cdn.example"]
    wrong = editor.post("/blocked/%d/allow" % row.id, data={"duration": "1h", "csrf_token": token, "allow": "name",
                                                            "name": "solo.example"})
    assert wrong.status_code == 400 and "is not a name gw1&#39;s DNS answered with 198.51.100.20" in wrong.text
