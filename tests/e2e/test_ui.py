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
    assert re.match(r"the account lou is locked after 5 failed logins until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                    page.inner_text("#login-error"))
    assert "/login" in page.url
    page.context.close()
    events = lab.api("GET", "/api/v1/audit", params={"action": "user.login_failed", "q": "lou"}).json()
    assert events["total"] >= 5


@pytest.fixture
def walk_cleanup(ui):
    """Deletes what the operator's walk made when it stopped half-way (the walk deletes them itself), so that a
    failure does not leave 198.51.100.20 open for the lab's other tests (the undeletable /28 stays, as made)."""
    lab = ui[0]
    yield
    listed = lab.api("GET", "/api/v1/entries")
    for item in listed.json()["items"] if listed.status_code == 200 else []:
        if item["target"] in (IP, DOMAIN):
            lab.api("DELETE", "/api/v1/entries/%d" % item["id"])


def test_an_operator_adds_watches_the_fleet_sees_traffic_and_deletes(ui, walk_cleanup):
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
    # The lab's other tests send traffic too (198.51.100.10 may be busier within the hour, and 198.51.100.20/32
    # 80/tcp is another test's): the walk's row exactly, not the first one.
    row = page.locator("#top-destinations tbody tr",
                       has=page.locator("td.target", has_text=re.compile("^%s/32$" % re.escape(IP))))
    assert row.count() == 1
    assert int(row.locator("td").nth(2).get_attribute("data-bytes")) >= 3000000
    assert IP in page.inner_text("#top-entries")
    shot(page, "traffic")
    row.locator("a:has-text('why allowed?')").click()            # why is this destination allowed?
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
    admin.locator("#tokens tr", has_text="ui-made-token").locator("a", has_text="Revoke").click()
    assert "Revoke the token ui-made-token?" in admin.inner_text("h1")     # asked first: it still works
    assert lab.api("GET", "/api/v1/entries", token=secret).status_code == 200
    admin.click("#confirm-button")
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


# ---- issue 15, points 5 and 6: users and safety, audit details, every page at 1366 and 390 px ------------------
WIDTHS = (1366, 390)
# Walks every visible element with text of its own and returns those whose colour on their (first opaque)
# background is under WCAG AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92
                     : Math.pow((x + 0.055) / 1.055, 2.4); }); return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = el => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                     if (c.length === 3 || c[3] === 1) { return c; } } return [255, 255, 255]; };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg") || !el.offsetParent && getComputedStyle(el).position !== "fixed") { continue; }
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) { continue; }
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || st.opacity === "0") { continue; }
    const a = lum(rgb(st.color)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) { bad.push(el.tagName + " '" + el.textContent.trim().slice(0, 40) + "' " + ratio.toFixed(2)); }
  }
  return bad;
}"""


def check_page(page, name, width):
    """No sideways scrolling at this width, AA contrast, a favicon, and the screenshot of the page."""
    page.wait_for_load_state("load")
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, "%s at %d px scrolls sideways: %d > %d" % (name, width, scroll, inner)
    assert page.evaluate(CONTRAST) == [], "%s at %d px: text under AA contrast" % (name, width)
    assert page.locator("link[rel=icon]").count() == 1
    shot(page, "%s-%d" % (name, width))


def test_users_password_role_unlock_and_confirmations(ui):
    lab, browser = ui
    admin = login(browser, lab, "ada")
    admin.goto("/admin/users")
    admin.fill("input[name=username]", "una")
    admin.fill("input[name=password]", "una-first-password")
    admin.select_option("select[name=role]", "editor")
    admin.click("form.grid button[type=submit]")
    assert "Created the editor user una." in admin.inner_text(".flash")

    una = login(browser, lab, "una", "una-first-password")
    assert una.inner_text("#whoami") == "una (editor)"
    # Five wrong passwords lock the account; the right one is refused then too, and that refusal is audited.
    stranger = login(browser, lab, "una", "not-her-password")
    for dummy in range(4):
        stranger.fill("input[name=username]", "una")
        stranger.fill("input[name=password]", "still-not-it")
        stranger.click("button[type=submit]")
    stranger.fill("input[name=username]", "una")
    stranger.fill("input[name=password]", "una-first-password")
    stranger.click("button[type=submit]")
    assert "the account una is locked" in stranger.inner_text("#login-error")
    stranger.context.close()

    admin.goto("/admin/users")
    admin.locator("#users tr[data-user=una]").locator("a", has_text="Manage").click()
    assert "locked until" in admin.inner_text("#user-state")
    shot(admin, "user-locked")
    admin.fill("#password-form input[name=password]", "una-second-password")
    admin.fill("#password-form input[name=password2]", "una-other-password")
    admin.click("#password-form button[type=submit]")
    assert "the two passwords differ" in admin.inner_text("#form-error")
    admin.fill("#password-form input[name=password]", "una-second-password")
    admin.fill("#password-form input[name=password2]", "una-second-password")
    admin.click("#password-form button[type=submit]")
    assert "it is unlocked" in admin.inner_text(".flash") and "active" in admin.inner_text("#user-state")
    una.goto("/entries")
    assert "/login" in una.url                      # the new password ended her session
    una.context.close()
    una = login(browser, lab, "una", "una-second-password")
    assert una.url.endswith("/entries")

    admin.select_option("#role-form select[name=role]", "viewer")
    admin.click("#role-form button[type=submit]")
    assert admin.inner_text("#user-role") == "viewer"
    una.reload()
    assert una.inner_text("#whoami") == "una (viewer)" and una.locator("#add").count() == 0

    # Disable asks first: cancel leaves her in; confirm ends her session.
    admin.click("#disable")
    assert "Disable user una?" in admin.inner_text("h1")
    shot(admin, "user-disable-confirm")
    admin.click("a:has-text('Cancel')")
    una.reload()
    assert una.url.endswith("/entries")
    admin.click("#disable")
    admin.click("#confirm-button")
    assert "Disabled user una." in admin.inner_text(".flash")
    una.reload()
    assert "/login" in una.url
    una.context.close()

    # Ada may not demote herself (nor would the last admin be demoted): the reason, the role unchanged.
    admin.goto("/admin/users")
    admin.locator("#users tr[data-user=ada]").locator("a", has_text="Manage").click()
    admin.select_option("#role-form select[name=role]", "viewer")
    admin.click("#role-form button[type=submit]")
    assert "you cannot demote your own account ada" in admin.inner_text("#form-error")
    assert admin.inner_text("#user-role") == "admin"

    admin.goto("/admin/users")
    admin.locator("#users tr[data-user=una]").locator("a", has_text="Manage").click()
    admin.click("#delete")
    assert "Delete user una?" in admin.inner_text("h1")
    admin.click("#confirm-button")
    assert "Deleted the viewer user una." in admin.inner_text(".flash")
    assert admin.locator("#users tr[data-user=una]").count() == 0

    # The audit log: una's story with its details, and the refusals with their reasons.
    admin.goto("/audit?target=una")
    text = admin.inner_text("#audit")
    for expected in ("user.create", "user.login_failed", "user.password", "user.role", "user.disable",
                     "user.delete", "refused"):
        assert expected in text, expected
    row = admin.locator("#audit tr", has_text="user.role").first
    row.locator("summary").click()
    details = row.locator("details").inner_text()
    assert "role" in details and "editor" in details and "viewer" in details
    refused = admin.locator("#audit tr", has=admin.locator(".badge.refused"), has_text="user.login").first
    refused.locator("summary").click()
    assert "is locked after 5 failed logins" in refused.locator(".reason").inner_text()
    shot(admin, "audit-details")
    admin.goto("/audit?target=ada&outcome=refused&action=user.role")
    assert admin.locator("#audit tr[data-event]").count() == 1
    admin.context.close()


def test_every_page_at_1366_and_390_px_without_sideways_scrolling(ui):
    lab, browser = ui
    made = lab.api("POST", "/api/v1/entries", json={
        "target": "198.51.100.77", "ports": ["443/tcp", "8000-8100/tcp"],
        "comment": "a long comment without spaces " + "x" * 120}).json()
    token = lab.api("POST", "/api/v1/tokens", json={"name": "layout-token", "role": "viewer"}).json()
    lab.api("POST", "/api/v1/entries", json={"target": "10.0.0.1"})          # a refusal in the audit log
    pages = [("entries", "/entries"), ("entry", "/entries/%d" % made["id"]),
             ("entry-delete", "/entries/%d/delete" % made["id"]), ("gateways", "/gateways"),
             ("traffic", "/traffic"), ("traffic-week", "/traffic?window=7d"), ("blocked", "/blocked"),
             ("why-port", "/addresses?q=198.51.100.77:443"), ("audit", "/audit"), ("users", "/admin/users"),
             ("tokens", "/admin/tokens"),
             ("token-revoke", "/admin/tokens/%d/revoke" % token["id"]), ("not-found", "/entries/999999")]
    try:
        for width in WIDTHS:
            context = browser.new_context(base_url=lab.url, viewport={"width": width, "height": 844})
            page = context.new_page()
            page.goto("/login")
            check_page(page, "login", width)
            page.fill("input[name=username]", "ada")
            page.fill("input[name=password]", PASSWORD["ada"])
            page.click("button[type=submit]")
            assert page.url.endswith("/entries")
            for name, path in pages:
                page.goto(path)
                check_page(page, name, width)
            page.goto("/admin/users")
            page.locator("#users tr[data-user=vic]").locator("a", has_text="Manage").click()
            check_page(page, "user", width)
            vic = page.url
            page.goto(vic + "/delete")
            check_page(page, "user-delete-confirm", width)
            page.goto(vic + "/disable")
            check_page(page, "user-disable-confirm", width)
            assert page.request.get("/favicon.ico").ok     # the redirect to the SVG, which is served
            page.goto("/entries")
            menu = page.locator("a[href='/gateways']")
            search = page.locator("header input[name=q]")
            if width == 390:
                # The navigation folds behind Menu (a checkbox: no script), which opens it.
                assert not menu.is_visible() and not search.is_visible()
                page.click("label.nav-button")
                assert menu.is_visible() and search.is_visible()
                check_page(page, "menu-open", width)
            else:
                assert menu.is_visible() and not page.locator("label.nav-button").is_visible()
            # "Why is this allowed" from the header, with a port.
            search.fill("198.51.100.77:8050")
            search.press("Enter")
            assert "198.51.100.77 port 8050: allowed." in page.inner_text("#why-verdict")
            search = page.locator("header input[name=q]")
            if width == 390:
                page.click("label.nav-button")
            search.fill("198.51.100.77:22")
            search.press("Enter")
            assert "198.51.100.77 port 22: not allowed" in page.inner_text("#why-verdict")
            check_page(page, "why-refused-port", width)
            # One time format, UTC, on the audit page and the entry page.
            page.goto("/audit")
            when = page.locator("#audit tbody tr td").first.inner_text()
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when), when
            context.close()
    finally:
        lab.api("DELETE", "/api/v1/entries/%d" % made["id"])
        lab.api("DELETE", "/api/v1/tokens/%d" % token["id"])
