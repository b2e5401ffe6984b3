"""The operators' UI in a real browser (Debian's chromium driven by Playwright) against the deployed lab.

Every page visited is saved as a screenshot in tests/output/ui/.
"""

import os
import re

import pytest

from tests.support import TOP, serverlib
from tests.support.lablib import LabHost, probe
from tests.support.nslib import wait_until

playwright_api = pytest.importorskip("playwright.sync_api")

SHOTS = os.path.join(TOP, "tests", "output", "ui")
CHROMIUM = "/usr/bin/chromium"
PASSWORD = {"ada": "ada-admin-password-1", "vic": "vic-viewer-password-1", "lou": "lou-locked-password-1"}
IP = "198.51.100.20"
DOMAIN = "ui.lab.test"
DOMAIN_ADDRESS = "203.0.113.10"
HOSTILE = '<script>window.__owned = 1</script><img src=x onerror="window.__owned = 2">'


def og_server(lab, *args, env=None):
    conf = os.path.join(lab.dir, "hosts", "server", "etc", "outputguard", "server.yml")
    return serverlib.og_server(conf, *args, env=env, check=False)


@pytest.fixture(scope="module")
def ui(deployed):
    lab = deployed[0]
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/setup installs it with OG_SETUP_EXTRAS=test)")
    for name, role in (("ada", "admin"), ("vic", "viewer"), ("lou", "editor")):
        made = og_server(lab, "user", "ensure", "--username", name, "--role", role, "--password-env", "PW",
                         env={"PW": PASSWORD[name]})
        assert made.returncode == 0, made.stderr
    with open(os.path.join(lab.dir, "dns", "hosts.d", "ui"), "w") as fh:
        fh.write("%s %s\n" % (DOMAIN_ADDRESS, DOMAIN))
    os.makedirs(SHOTS, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield lab, browser
        finally:
            browser.close()
            os.unlink(os.path.join(lab.dir, "dns", "hosts.d", "ui"))


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def login(browser, lab, name, password=None):
    context = browser.new_context(base_url=lab.url)
    page = context.new_page()
    page.goto("/entries")
    assert "/login" in page.url      # not logged in: sent to the login page, and back afterwards
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password or PASSWORD[name])
    page.click("button[type=submit]")
    return page


def test_the_ui_user_made_by_the_server_role_logs_in(ui):
    lab, browser = ui      # og_server_ui_users in inventories/lab, password from scripts/lab's secrets.yml
    page = login(browser, lab, "admin", lab.secret("og_lab_admin_password"))
    assert page.url.endswith("/entries") and page.inner_text("#whoami").startswith("admin")
    assert page.locator("a[href='/admin/users']").count() == 1
    page.context.close()


def test_wrong_password_is_refused_and_repeated_failures_lock_the_account(ui):
    lab, browser = ui
    page = login(browser, lab, "lou", "not-the-password")
    assert page.inner_text("#login-error") == "wrong username or password"
    shot(page, "login-refused")
    for dummy in range(4):
        page.fill("input[name=username]", "lou")
        page.fill("input[name=password]", "still-not-it")
        page.click("button[type=submit]")
    page.fill("input[name=username]", "lou")
    page.fill("input[name=password]", PASSWORD["lou"])     # the right password, but the account is locked now
    page.click("button[type=submit]")
    assert re.match(r"the account lou is locked after 5 failed logins until \d\d:\d\d:\d\d UTC",
                    page.inner_text("#login-error"))
    assert "/login" in page.url
    page.context.close()
    events = lab.api("GET", "/api/v1/audit", params={"action": "user.login_failed", "q": "lou"}).json()
    assert events["total"] >= 5


def test_an_operator_adds_watches_the_fleet_sees_traffic_and_deletes(ui):
    lab, browser = ui
    page = login(browser, lab, "ada")
    assert page.url.endswith("/entries")
    assert page.inner_text("#whoami").startswith("ada")
    shot(page, "entries-empty")

    fleet = page.context.new_page()          # the fleet page stays open and must update by itself
    fleet.goto("/gateways")
    before = int(fleet.inner_text("#head-revision"))
    shot(fleet, "gateways")

    # Bad input: the server's message next to the form, the input kept, nothing created.
    page.fill("input[name=target]", "10.1.2.3")
    page.click("#add button[type=submit]")
    assert "10.0.0.0/8" in page.inner_text("#form-error")
    assert page.input_value("input[name=target]") == "10.1.2.3"
    shot(page, "entries-refused")

    page.goto("/entries")
    page.fill("input[name=target]", IP)
    page.fill("input[name=comment]", "partner API for the UI test")
    page.click("#add button[type=submit]")
    assert re.search(r"/entries/\d+$", page.url)
    ip_entry = int(page.url.rsplit("/", 1)[1])
    assert page.inner_text("#entry-target") == IP

    page.goto("/entries")
    page.fill("input[name=target]", DOMAIN.upper() + ".")      # normalised by the server
    page.click("#add button[type=submit]")
    domain_entry = int(page.url.rsplit("/", 1)[1])
    assert page.inner_text("#entry-target") == DOMAIN
    assert DOMAIN_ADDRESS + "/32" in page.inner_text("#addresses")    # resolved at once
    shot(page, "entry-domain")

    # The fleet page shows both gateways at the new revision without a reload.
    def fleet_current():
        head = int(fleet.inner_text("#head-revision"))
        rows = fleet.locator("#fleet tbody tr")
        names = [rows.nth(i).get_attribute("data-name") for i in range(rows.count())]
        applied = [int(rows.nth(i).locator("td.applied").inner_text()) for i in range(rows.count())]
        return head > before and sorted(names) == ["gw1", "gw2"] and applied == [head, head]
    wait_until(fleet_current, timeout=30, what="fleet page showing both gateways at the head revision")
    assert fleet.locator("#fleet .badge.bad").count() == 0
    shot(fleet, "gateways-current")

    # Traffic through the gateway shows on the entry's page and on the traffic page.
    assert probe(lab, "c1", IP) == "ok"
    c1 = LabHost(lab.ns("c1"))
    c1.run(["curl", "-sf", "-o", "/dev/null", "http://%s/bytes/3000000" % IP])
    c1.run(["curl", "-sf", "-o", "/dev/null", "--data-binary", "@-", "http://%s/sink" % IP],
           input="y" * 1000000)

    def counted():
        page.goto("/entries/%d" % ip_entry)
        return int(page.get_attribute("#in-bytes", "data-bytes")) >= 3000000 and \
            int(page.get_attribute("#out-bytes", "data-bytes")) >= 1000000
    wait_until(counted, timeout=60, interval=3, what="the entry's traffic on its page")
    assert page.locator("#traffic-chart polyline").count() == 2
    axis = float(page.get_attribute("#traffic-chart line.axis", "y1"))
    points = page.get_attribute("#traffic-chart polyline.series-in", "points").split()
    assert min(float(p.split(",")[1]) for p in points) < axis     # the chart shows the bytes, not a flat line
    shot(page, "entry-traffic")
    page.goto("/traffic")
    top = page.locator("#top-destinations tbody tr").first
    assert top.locator("td.target").inner_text() == IP + "/32"
    assert int(top.locator("td").nth(2).get_attribute("data-bytes")) >= 3000000
    assert IP in page.inner_text("#top-entries")
    shot(page, "traffic")
    page.click("#top-destinations a")            # why is this destination allowed?
    assert IP in page.inner_text("#why") and "typed" in page.inner_text("#why")
    shot(page, "why")

    # An undeletable entry: the reason instead of a delete button; a POST is refused with it.
    page.goto("/entries")
    page.fill("input[name=target]", "203.0.113.0/28")
    page.uncheck("input[name=deletable]")
    page.click("#add button[type=submit]")
    fixed = int(page.url.rsplit("/", 1)[1])
    assert "undeletable" in page.inner_text("#undeletable")
    page.click("#delete")
    reason = page.inner_text("#reason")
    assert "entry %d (203.0.113.0/28) was created as undeletable by ada" % fixed in reason
    assert page.locator("#confirm-delete").count() == 0
    shot(page, "delete-undeletable")
    token = page.get_attribute("input[name=csrf_token]", "value")
    refused = page.request.post("/entries/%d/delete" % fixed, form={"csrf_token": token})
    assert refused.status == 403 and "was created as undeletable" in refused.text()

    # Delete with confirmation.
    page.goto("/entries/%d" % ip_entry)
    page.click("#delete")
    shot(page, "delete-confirm")
    page.click("#confirm-delete")
    assert page.url.endswith("/entries")
    assert "Deleted entry %d (%s)" % (ip_entry, IP) in page.inner_text(".flash")
    wait_until(lambda: probe(lab, "c1", IP) == "refused", timeout=15, what="deleted address refused")

    # Every action in the audit log, by ada.
    page.goto("/audit?actor=ada")
    audit = page.inner_text("#audit")
    for expected in ("entry.create", "entry.delete", "user.login", "created %s" % IP, "deleted %s" % IP,
                     "created %s" % DOMAIN, "created 203.0.113.0/28"):
        assert expected in audit, expected
    shot(page, "audit")
    page.goto("/entries/%d/delete" % domain_entry)
    page.click("#confirm-delete")
    page.context.close()


def test_markup_in_targets_and_comments_is_shown_as_text(ui):
    lab, browser = ui
    page = login(browser, lab, "ada")
    page.fill("input[name=target]", HOSTILE)
    page.click("#add button[type=submit]")
    assert HOSTILE in page.inner_text("#form-error")          # the server's message quotes it, as text
    assert page.input_value("input[name=target]") == HOSTILE
    page.goto("/entries")
    page.fill("input[name=target]", "198.51.100.77")
    page.fill("input[name=comment]", HOSTILE)
    page.click("#add button[type=submit]")
    entry_id = int(page.url.rsplit("/", 1)[1])
    assert page.inner_text("#entry-comment") == HOSTILE
    shot(page, "entry-markup")
    page.goto("/entries?q=198.51.100.77")
    assert page.inner_text("#entries td.comment") == HOSTILE
    page.goto("/audit?q=198.51.100.77")
    shot(page, "markup-as-text")
    for path in ("/entries", "/entries/%d" % entry_id, "/audit"):
        page.goto(path)
        assert page.evaluate("window.__owned") is None
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
    assert lab.api("DELETE", "/api/v1/entries/%d" % entry_id).status_code == 204
    page.context.close()


def test_a_viewer_sees_no_write_controls_and_forged_posts_are_refused(ui):
    lab, browser = ui
    page = login(browser, lab, "vic")
    assert page.locator("#add").count() == 0
    assert page.locator("a:has-text('Delete')").count() == 0
    assert page.locator("a[href='/admin/users']").count() == 0
    shot(page, "entries-viewer")
    page.goto("/admin/users")
    assert "may not administer" in page.inner_text("#message")
    token = page.evaluate("document.querySelector('input[name=csrf_token]').value")
    as_viewer = page.request.post("/entries", form={"target": "198.51.100.99", "csrf_token": token})
    assert as_viewer.status == 403 and "role viewer, which may not change entries" in as_viewer.text()
    page.context.close()

    # A cross-site form (no CSRF token) is refused even for an admin session.
    admin = login(browser, lab, "ada")
    forged = admin.request.post("/entries", form={"target": "198.51.100.98"})
    assert forged.status == 400 and "did not come from a page of this server" in forged.text()
    assert lab.api("GET", "/api/v1/entries", params={"q": "198.51.100.9"}).json()["total"] == 0

    # Users and tokens pages for admins: a token made here works on the API, and revoking it stops it.
    admin.goto("/admin/tokens")
    admin.fill("input[name=name]", "ui-made-token")
    admin.select_option("select[name=role]", "viewer")
    admin.click("form.grid button[type=submit]")
    secret = admin.inner_text("#token-value").strip()
    shot(admin, "tokens")
    assert lab.api("GET", "/api/v1/entries", token=secret).status_code == 200
    admin.locator("#tokens tr", has_text="ui-made-token").locator("button").click()
    assert lab.api("GET", "/api/v1/entries", token=secret).status_code == 401
    admin.goto("/admin/users")
    shot(admin, "users")
    assert "vic" in admin.inner_text("#users")
    admin.context.close()


@pytest.mark.parametrize("width", [1366, 390])
def test_an_entry_is_edited_in_place_from_its_page(ui, width):
    lab, browser = ui
    target = "198.51.100.%d" % (40 if width == 1366 else 41)
    entry = lab.api("POST", "/api/v1/entries", json={"target": target, "ports": ["80/tcp"],
                                                     "comment": "before"}).json()
    context = browser.new_context(base_url=lab.url, viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD["ada"])
    page.click("button[type=submit]")
    try:
        page.goto("/entries/%d" % entry["id"])
        assert not page.is_visible("#edit-form")          # folded until asked for
        page.click("#edit summary")
        form = page.locator("#edit-form").bounding_box()
        assert form["x"] >= 0 and form["x"] + form["width"] <= width, form      # the form fits the window
        assert page.input_value("#edit-form input[name=ports]") == "80/tcp"
        shot(page, "entry-edit-%d" % width)

        # Bad input: the server's message in the form, what was typed kept, nothing changed.
        page.fill("#edit-form input[name=ports]", "80/xyz")
        page.fill("#edit-form input[name=comment]", "typed " + HOSTILE)
        page.click("#edit-form button[type=submit]")
        assert "80/xyz" in page.inner_text("#edit-error")
        assert page.input_value("#edit-form input[name=ports]") == "80/xyz"
        assert page.input_value("#edit-form input[name=comment]") == "typed " + HOSTILE
        assert page.evaluate("window.__owned") is None
        shot(page, "entry-edit-refused-%d" % width)
        assert lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()["ports"] == ["80/tcp"]

        # Someone else changes it meanwhile: the form is refused with the typed values kept, then saved.
        lab.api("PATCH", "/api/v1/entries/%d" % entry["id"], json={"comment": "by the API"})
        page.fill("#edit-form input[name=ports]", "80/tcp 8443/tcp")
        page.fill("#edit-form input[name=comment]", "after")
        page.click("#edit-form button[type=submit]")
        assert "Someone changed this entry" in page.inner_text("#edit-error")
        assert page.inner_text("#entry-comment") == "by the API"
        assert page.input_value("#edit-form input[name=comment]") == "after"
        shot(page, "entry-edit-stale-%d" % width)
        page.click("#edit-form button[type=submit]")
        assert re.search(r"Saved entry %d \(%s \(80/tcp, 8443/tcp\)\) at revision \d+" % (entry["id"], target),
                         page.inner_text(".flash"))
        assert page.inner_text("#entry-comment") == "after"
        shot(page, "entry-edited-%d" % width)
        stored = lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()
        assert (stored["id"], stored["ports"], stored["comment"]) == (entry["id"], ["80/tcp", "8443/tcp"], "after")
        page.goto("/audit?object_type=entry&object_id=%d" % entry["id"])
        assert "changed comment, ports of %s" % target in page.inner_text("#audit")
        shot(page, "entry-edit-audit-%d" % width)
    finally:
        context.close()
        lab.api("DELETE", "/api/v1/entries/%d" % entry["id"])
