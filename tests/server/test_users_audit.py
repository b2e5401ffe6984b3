"""Issue 15 points 5 and 6 on the server side: admins manage users (password, role, unlock, disable, delete)
with confirmation and without losing the last admin; refused actions are audited with their reason; the audit
log's details and filters (UI and API); the header's "why is this allowed" with address:port; favicon, UTC.

The browser side (390 px, the menu, screenshots) is tests/e2e/test_ui.py.
"""

import re

import pytest

from server_app.models import AuditEvent, Entry, User, db
from server_app.services import audit, entries, tokens, users
from tests.support.uilib import PW, csrf, login, make_app


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, login_max_failures=3, login_lockout=600)


def admin_client(app, name="ada"):
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c


def post(client, path, **data):
    data["csrf_token"] = csrf(client, "/entries")
    return client.post(path, data=data)


def uid(app, name):
    with app.app_context():
        return users.by_name(name).id


def events(app, **filters):
    with app.app_context():
        return audit.query(per_page=500, **filters)[0]


def test_an_admin_sets_a_password_which_unlocks_the_account_and_ends_its_sessions(app):
    eve_session = app.test_client()
    assert login(eve_session, "eve").status_code == 302
    c = app.test_client()
    for dummy in range(3):
        assert login(c, "eve", "wrong-password").status_code == 401
    assert login(c, "eve").status_code == 429                      # locked, even for the right password
    admin = admin_client(app)
    page = admin.get("/admin/users/%d" % uid(app, "eve")).text
    assert "locked until" in page and 'id="unlock"' in page

    # Two different passwords, or a short one: refused with the reason, nothing changed.
    r = post(admin, "/admin/users/%d/password" % uid(app, "eve"), password=PW + "-new", password2=PW + "-other")
    assert r.status_code == 400 and "the two passwords differ" in r.text
    r = post(admin, "/admin/users/%d/password" % uid(app, "eve"), password="short", password2="short")
    assert r.status_code == 400 and "at least 10 characters" in r.text
    assert login(app.test_client(), "eve").status_code == 429      # still locked, old password still the one

    r = post(admin, "/admin/users/%d/password" % uid(app, "eve"), password=PW + "-new", password2=PW + "-new")
    assert r.status_code == 302
    assert "Set a new password for eve; it is unlocked" in admin.get(r.headers["Location"]).text
    assert login(app.test_client(), "eve").status_code == 401      # the old password is gone ...
    assert login(app.test_client(), "eve", PW + "-new").status_code == 302   # ... the new one works at once
    assert eve_session.get("/entries").status_code == 302         # her earlier session ended
    done = events(app, action="user.password", outcome="done")
    assert len(done) == 1 and done[0].target == "eve" and done[0].actor == "ada" and done[0].reason is None
    assert done[0].before["locked_until"] is not None and done[0].after["locked_until"] is None
    assert "hash" not in str(done[0].before) + str(done[0].after)
    refused = events(app, action="user.password", outcome="refused")      # newest first
    assert [e.reason for e in refused] == ["the password must have at least 10 characters",
                                           "the two passwords differ; type the same new password twice"]
    assert all(e.target == "eve" and PW not in str(e.after) + str(e.before) for e in refused)


def test_unlock_keeps_the_password_and_is_audited(app):
    c = app.test_client()
    for dummy in range(3):
        login(c, "vic", "wrong-password")
    admin = admin_client(app)
    r = post(admin, "/admin/users/%d/unlock" % uid(app, "vic"))
    assert r.status_code == 302
    assert login(app.test_client(), "vic").status_code == 302
    (event,) = events(app, action="user.unlock")
    assert event.before["locked_until"] and event.after["locked_until"] is None and event.target == "vic"


def test_role_changes_and_the_last_admin_is_kept(app):
    admin = admin_client(app)
    r = post(admin, "/admin/users/%d/role" % uid(app, "vic"), role="editor")
    assert r.status_code == 302
    with app.app_context():
        assert users.by_name("vic").role == "editor"
    (event,) = events(app, action="user.role")
    assert (event.before["role"], event.after["role"], event.target) == ("viewer", "editor", "vic")
    r = post(admin, "/admin/users/%d/role" % uid(app, "vic"), role="root")
    assert r.status_code == 400 and "role &#39;root&#39; must be one of viewer, editor, admin" in r.text

    # Ada is the only admin: she may not demote, disable or delete herself, and nobody may leave none.
    for action, data in (("role", {"role": "viewer"}), ("disable", {}), ("delete", {})):
        r = post(admin, "/admin/users/%d/%s" % (uid(app, "ada"), action), **data)
        assert r.status_code == 400 and "your own account ada" in r.text, action
    with app.app_context():
        ada = users.by_name("ada")
        assert (ada.role, ada.disabled) == ("admin", False)
        for call in (lambda: users.set_role(ada.id, "editor"), lambda: users.set_disabled(ada.id, True),
                     lambda: users.delete(ada.id)):
            with pytest.raises(users.UserError) as refused:
                call()
            assert refused.value.code == "last_admin"
            assert "ada is the last enabled admin" in refused.value.message
        # With a second admin, one may demote the other; then the other is the last one.
        users.create("bob", PW, "admin")
        users.set_role(ada.id, "viewer")
        with pytest.raises(users.UserError, match="bob is the last enabled admin"):
            users.set_disabled(users.by_name("bob").id, True)
    refusals = events(app, outcome="refused", target="ada")
    assert {e.action for e in refusals} >= {"user.role", "user.disable", "user.delete"}
    assert all("your own account ada" in e.reason for e in refusals)


def test_disable_and_delete_ask_for_confirmation_first(app):
    admin = admin_client(app)
    vic = uid(app, "vic")
    page = admin.get("/admin/users/%d" % vic).text
    assert 'href="/admin/users/%d/disable"' % vic in page and 'href="/admin/users/%d/delete"' % vic in page
    confirm = admin.get("/admin/users/%d/disable" % vic)
    assert confirm.status_code == 200 and "Disable user vic?" in confirm.text
    assert 'action="/admin/users/%d/disable"' % vic in confirm.text and 'id="confirm-button"' in confirm.text
    with app.app_context():
        assert not users.by_name("vic").disabled                   # asking did nothing
    assert post(admin, "/admin/users/%d/disable" % vic).status_code == 302
    with app.app_context():
        assert users.by_name("vic").disabled
    assert post(admin, "/admin/users/%d/enable" % vic).status_code == 302

    confirm = admin.get("/admin/users/%d/delete" % vic)
    assert "Delete user vic?" in confirm.text and "removed for good" in confirm.text
    with app.app_context():
        assert users.by_name("vic") is not None
    r = post(admin, "/admin/users/%d/delete" % vic)
    assert r.status_code == 302 and "Deleted the viewer user vic." in admin.get(r.headers["Location"]).text
    with app.app_context():
        assert users.by_name("vic") is None
    (event,) = events(app, action="user.delete")
    assert event.before["username"] == "vic" and event.target == "vic"
    assert admin.get("/admin/users/%d" % vic).status_code == 404
    assert admin.get("/admin/users/%d/delete" % vic).status_code == 404


def test_revoking_a_token_asks_for_confirmation_first(app):
    with app.app_context():
        token, secret = tokens.create("viewer", "to-revoke")
        token_id = token.id
    admin = admin_client(app)
    assert 'href="/admin/tokens/%d/revoke"' % token_id in admin.get("/admin/tokens").text
    confirm = admin.get("/admin/tokens/%d/revoke" % token_id)
    assert confirm.status_code == 200 and "Revoke the token to-revoke?" in confirm.text
    api = app.test_client()
    auth = {"Authorization": "Bearer " + secret}
    assert api.get("/api/v1/entries", headers=auth).status_code == 200     # asking did nothing
    assert post(admin, "/admin/tokens/%d/revoke" % token_id).status_code == 302
    assert api.get("/api/v1/entries", headers=auth).status_code == 401
    assert admin.get("/admin/tokens/%d/revoke" % token_id).status_code == 409   # revoked already


def test_refused_actions_in_the_ui_are_audited_with_the_reason(app):
    c = app.test_client()
    for dummy in range(3):
        login(c, "eve", "wrong-password")
    assert login(c, "eve", remote="198.51.100.5").status_code == 429
    (locked,) = events(app, action="user.login", outcome="refused")
    assert locked.target == "eve" and locked.remote_addr == "198.51.100.5"
    assert "is locked after 3 failed logins" in locked.reason and locked.before["locked_until"]

    with app.app_context():
        kept = entries.create({"target": "198.51.100.30", "deletable": False, "comment": "core DNS"},
                              app.config["OG"], "test")[0].id
    admin = admin_client(app)
    r = post(admin, "/entries/%d/delete" % kept)
    assert r.status_code == 403
    (undeletable,) = events(app, action="entry.delete", outcome="refused")
    assert undeletable.target == "198.51.100.30" and undeletable.actor == "ada"
    assert "was created as undeletable" in undeletable.reason
    assert undeletable.before["deletable"] is False and undeletable.before["comment"] == "core DNS"

    r = post(admin, "/entries", target="10.0.0.1", comment="inside")
    assert r.status_code == 400
    with app.app_context():
        assert db.session.query(Entry).filter_by(target="10.0.0.1/32").count() == 0
        assert db.session.query(Entry).filter_by(target="10.0.0.1").count() == 0
    (internal,) = events(app, action="entry.create", outcome="refused")
    assert internal.target == "10.0.0.1" and internal.after == {"target": "10.0.0.1", "comment": "inside"}
    assert "internal" in internal.reason and internal.summary.startswith("refused entry.create: ")

    viewer = app.test_client()
    login(viewer, "vic")
    assert post(viewer, "/entries", target="198.51.100.31").status_code == 403
    assert viewer.get("/admin/users").status_code == 403
    forbidden = events(app, actor="vic", outcome="refused")
    assert {e.action for e in forbidden} == {"entry.create", "ui.users_page"}
    assert all("role viewer, which may not" in e.reason for e in forbidden)
    page = [e for e in forbidden if e.action == "ui.users_page"][0]
    assert (page.object_type, page.target) == ("request", "/admin/users")
    # A done event keeps outcome "done" and no reason.
    assert all(e.outcome == "done" and e.reason is None for e in events(app, action="user.create"))


def test_the_audit_page_shows_details_and_filters_by_actor_action_and_target(app):
    with app.app_context():
        entries.create({"target": "198.51.100.40", "comment": "<b>first</b>", "ports": ["443/tcp"]},
                       app.config["OG"], "test")
        entries.create({"target": "203.0.113.41", "deletable": False}, app.config["OG"], "test")
    admin = admin_client(app)
    post(admin, "/entries", target="10.0.0.1")
    r = admin.get("/audit?target=198.51.100.40")
    rows = re.findall(r'<tr data-event="\d+"', r.text)
    assert len(rows) == 1 and "created 198.51.100.40" in r.text
    assert "<td>comment</td>" in r.text and "&lt;b&gt;first&lt;/b&gt;" in r.text and "<b>first</b>" not in r.text
    assert "<td>ports</td>" in r.text and "443/tcp" in r.text and "<td>deletable</td>" in r.text
    # The times in before/after are in the UI's one format, not as stored.
    assert re.search(r"<td>created_at</td><td>—</td><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", r.text)
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", r.text)
    r = admin.get("/audit?target=10.0.0.1&outcome=refused")
    assert len(re.findall(r'<tr data-event="\d+"', r.text)) == 1
    assert "Reason:" in r.text and "internal" in r.text and "<th>Asked</th>" in r.text
    r = admin.get("/audit?action=entry.&actor=system")
    assert len(re.findall(r'<tr data-event="\d+"', r.text)) == 2
    r = admin.get("/audit?action=entry.create&actor=ada")
    assert len(re.findall(r'<tr data-event="\d+"', r.text)) == 1            # ada's refused add only
    r = admin.get("/audit?target=*.41")
    assert len(re.findall(r'<tr data-event="\d+"', r.text)) == 1
    r = admin.get("/audit?outcome=maybe")
    assert r.status_code == 200 and "outcome &#39;maybe&#39; must be done or refused" in r.text


def test_why_allowed_takes_an_address_a_port_and_a_name(app):
    with app.app_context():
        entries.create({"target": "198.51.100.60", "ports": ["443/tcp", "8000-8100/tcp"]}, app.config["OG"], "t")
        entries.create({"target": "api.example.com", "ports": ["443/tcp"]}, app.config["OG"], "t")
    c = admin_client(app)
    page = c.get("/entries").text
    assert 'class="why-search"' in page and 'action="/addresses"' in page     # the header's box, on every page
    r = c.get("/addresses?q=198.51.100.60:443")
    assert "198.51.100.60 port 443: allowed." in r.text
    r = c.get("/addresses?q=198.51.100.60:8050/tcp")
    assert "198.51.100.60 port 8050/tcp: allowed." in r.text
    r = c.get("/addresses?q=198.51.100.60:8050/udp")
    assert "port 8050/udp: not allowed (an entry covers the address, but not this port)" in r.text
    r = c.get("/addresses?q=198.51.100.60:22")
    assert "198.51.100.60 port 22: not allowed" in r.text and "not port 22" in r.text
    r = c.get("/addresses?q=api.example.com:443")
    assert "api.example.com port 443: allowed." in r.text
    r = c.get("/addresses?q=api.example.com:80")
    assert "api.example.com port 80: not allowed" in r.text
    r = c.get("/addresses?q=198.51.100.61")
    assert "No entry allows 198.51.100.61" in r.text
    r = c.get("/addresses?q=198.51.100.60:70000")
    assert "port 70000 in &#39;198.51.100.60:70000&#39; must lie within 1-65535" in r.text
    r = c.get("/addresses?q=[2001:db8::1]:443")
    assert "2001:db8::1 port 443: not allowed" in r.text
    r = c.get("/addresses?q=2001:db8::1")           # IPv6 without brackets: no port taken from it
    assert "No entry allows 2001:db8::1" in r.text
    r = c.get("/addresses?q=198.51.100.60")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", r.text)      # since, in the one time format


def test_favicon_and_the_menu_are_served_without_script(app):
    c = admin_client(app)
    r = c.get("/favicon.ico")
    assert r.status_code == 301 and r.headers["Location"].endswith("/static/favicon.svg")
    svg = c.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    page = c.get("/entries").text
    assert 'rel="icon" href="/static/favicon.svg"' in page
    assert 'id="nav-toggle"' in page and 'for="nav-toggle"' in page         # a checkbox and its label, no JS
    with app.app_context():
        assert db.session.query(User).count() == 3
        assert db.session.query(AuditEvent).filter(AuditEvent.outcome == "refused").count() == 0
