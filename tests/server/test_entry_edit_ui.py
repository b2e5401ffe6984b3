"""The entry page's edit form without a browser: CSRF, roles, errors that keep the form filled, a stale form.

The browser test is tests/e2e/test_ui.py::test_an_entry_is_edited_in_place_from_its_page."""

import html
import re

import pytest

from server_app.services import entries
from tests.support.uilib import login, make_app


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        entry, _revision = entries.create({"target": "198.51.100.10", "ports": ["80/tcp"], "comment": "web"},
                                          app.config["OG"], "test")
        app.config["ENTRY"] = entry.id
    return app


def _field(text, name):
    found = re.search(r'name="%s" value="([^"]*)"' % name, text)
    return html.unescape(found.group(1)) if found else None


def _client(app, name):
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c


def _form(c, path):
    page = c.get(path).text
    return {k: _field(page, k) for k in ("csrf_token", "etag", "ports", "expires_at", "comment")}, page


def _entry(app):
    with app.app_context():
        return entries.to_json(entries.db.session.get(entries.Entry, app.config["ENTRY"]))


def test_the_form_saves_in_place_and_says_whether_the_gateways_changed(app):
    c = _client(app, "eve")
    path = "/entries/%d" % app.config["ENTRY"]
    form, page = _form(c, path)
    assert form["ports"] == "80/tcp" and form["comment"] == "web" and 'id="edit-form"' in page
    assert 'name="undeletable"' not in page                   # an editor may not
    answer = c.post(path + "/edit", data=dict(form, comment="web <b>x</b>"), follow_redirects=True)
    assert answer.status_code == 200
    assert "what the gateways enforce did not change" in answer.text and "<b>x</b>" not in answer.text
    form, page = _form(c, path)
    answer = c.post(path + "/edit", data=dict(form, ports="80/tcp 8443/tcp"), follow_redirects=True)
    assert re.search(r"Saved entry \d+ \(198\.51\.100\.10 \(80/tcp, 8443/tcp\)\) at revision \d+", answer.text)
    assert (_entry(app)["ports"], _entry(app)["comment"]) == (["80/tcp", "8443/tcp"], "web <b>x</b>")


def test_an_error_keeps_what_was_typed_and_changes_nothing(app):
    c = _client(app, "eve")
    path = "/entries/%d" % app.config["ENTRY"]
    form, _page = _form(c, path)
    answer = c.post(path + "/edit", data=dict(form, ports="80/xyz", comment="typed"))
    assert answer.status_code == 400 and 'id="edit-error"' in answer.text and "80/xyz" in answer.text
    assert _field(answer.text, "ports") == "80/xyz" and _field(answer.text, "comment") == "typed"
    assert " open>" in answer.text                               # the form stays open
    assert (_entry(app)["ports"], _entry(app)["comment"]) == (["80/tcp"], "web")
    answer = c.post(path + "/edit", data=dict(form, expires_at="2001-01-01T00:00"))
    assert answer.status_code == 400 and "lies in the past" in answer.text


def test_a_stale_form_is_refused_with_the_typed_values_kept(app):
    eve, ada = _client(app, "eve"), _client(app, "ada")
    path = "/entries/%d" % app.config["ENTRY"]
    stale, _page = _form(eve, path)
    fresh, _page = _form(ada, path)
    assert ada.post(path + "/edit", data=dict(fresh, comment="ada's")).status_code == 302
    answer = eve.post(path + "/edit", data=dict(stale, comment="eve's"))
    assert answer.status_code == 412 and "Someone changed this entry" in answer.text
    assert _field(answer.text, "comment") == "eve's" and _entry(app)["comment"] == "ada's"
    # Saved again from that page (its ETag is the current one now), the change goes through.
    again = {k: _field(answer.text, k) for k in ("csrf_token", "etag", "ports", "expires_at", "comment")}
    assert eve.post(path + "/edit", data=again).status_code == 302 and _entry(app)["comment"] == "eve's"


def test_csrf_roles_and_undeletable(app):
    path = "/entries/%d" % app.config["ENTRY"]
    eve = _client(app, "eve")
    form, _page = _form(eve, path)
    assert eve.post(path + "/edit", data=dict(form, csrf_token="")).status_code == 400
    assert eve.post(path + "/edit", data=dict(form, undeletable="on")).status_code == 403
    vic = _client(app, "vic")
    page = vic.get(path).text
    assert 'id="edit-form"' not in page
    assert vic.post(path + "/edit", data=dict(form, csrf_token=_field(page, "csrf_token") or form["csrf_token"])
                    ).status_code == 403
    ada = _client(app, "ada")
    form, page = _form(ada, path)
    assert 'name="undeletable"' in page
    assert ada.post(path + "/edit", data=dict(form, undeletable="on")).status_code == 302
    assert _entry(app)["deletable"] is False
    form, page = _form(eve, path)
    assert 'name="undeletable"' not in page and "only an admin may change its ports or expiry" in page
    assert eve.post(path + "/edit", data=dict(form, comment="still editable")).status_code == 302
    answer = eve.post(path + "/edit", data=dict(_form(eve, path)[0], ports="443/tcp"))
    assert answer.status_code == 403 and "only an admin may change its ports" in answer.text
    assert (_entry(app)["comment"], _entry(app)["ports"]) == ("still editable", ["80/tcp"])
