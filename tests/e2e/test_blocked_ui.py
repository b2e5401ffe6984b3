"""The Blocked page and observe mode in a real browser (Debian's chromium, Playwright) against the deployed lab,
at 1366 and 390 px wide: a client's refused connection shows on the page with client, destination and port, one
click allows it for an hour (an entry by the normal path), and the fleet page switches the gateway to observe
and back in one click each, the attempt it lets through shown apart; a connection to an address the client's
gateway DNS answered for a name shows that name, and "Allow name" opens it by a domain entry. Screenshots in
tests/output/ui/."""

import re

import pytest

from tests.e2e.test_dns import dig
# ui is the module's browser fixture (pytest finds it by name).
from tests.e2e.test_ui import login, shot, ui  # noqa: F401  pylint: disable=unused-import
from tests.support.lablib import probe
from tests.support.nslib import wait_until

REFUSED = ("198.51.100.99", 8443)      # no entry, no service: the gateway's reset is the answer
# Services of the lab's internet (scripts/lab); the first one no entry allows is the observe test's target.
SERVICES = [("198.51.100.20", 80), ("203.0.113.10", 80), ("198.51.100.10", 8443)]
C1 = "10.77.0.21"                      # c1 on the lab's LAN (scripts/lab)
REPORTED = 60                          # the agent reports on its 15 s counters cycle


def rows(lab, **params):
    body = lab.api("GET", "/api/v1/blocked", params=params).json()
    return body["items"]


@pytest.mark.parametrize("width", [1366, 390])
def test_a_refused_connection_is_shown_allowed_in_one_click_and_observe_mode_lets_it_through(ui, width):  # noqa: F811
    lab, browser = ui
    address, port = REFUSED
    port += width % 7          # a destination of its own per width: 8443 + 1 and 8443 + 5
    assert probe(lab, "c1", address, port) == "refused"
    wait_until(lambda: [r for r in rows(lab, destination=address) if r["port"] == str(port)], timeout=REPORTED,
               interval=1, what="the attempt to port %d on the server" % port)
    row = [r for r in rows(lab, destination=address) if r["port"] == str(port)][0]
    gateway = row["gateway"]
    assert (row["client"], row["proto"], row["observed"]) == (C1, "tcp", False)

    page = login(browser, lab, "ada")
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/blocked?destination=%s" % address)
    line = page.locator("#refused tr[data-id='%d']" % row["id"])
    assert line.locator("td").nth(2).inner_text() == address
    assert line.locator("td").nth(3).inner_text() == ""            # names: c1 asked no DNS for this address
    assert line.locator("td").nth(4).inner_text() == "%d/tcp" % port
    # The table scrolls inside its own box, never wider than the window.
    assert page.evaluate("document.querySelector('#refused').parentElement.getBoundingClientRect().width") <= width
    shot(page, "blocked-%d" % width)
    line.locator("select[name=duration]").select_option("1h")
    line.locator("button[type=submit]:not([value=name])").click()     # "Allow", not "Allow name"
    flash = page.inner_text("p.flash.success")
    assert flash.startswith("Allowed %s (%d/tcp) for 1 hour as entry " % (address, port)), flash
    entry_id = int(flash.split(" as entry ")[1].split()[0])
    shot(page, "blocked-allowed-%d" % width)
    entry = lab.api("GET", "/api/v1/entries/%d" % entry_id).json()
    assert entry["ports"] == ["%d/tcp" % port] and entry["expires_at"]
    assert lab.api("DELETE", "/api/v1/entries/%d" % entry_id).status_code == 204

    # Observe mode, from the fleet page, for the gateway the client goes through.
    target = next((a, p) for a, p in SERVICES if probe(lab, "c1", a, p) == "refused")
    page.goto("/gateways")
    page.click("text=Switch %s to observe" % gateway)
    assert "Gateway %s set to observe" % gateway in page.inner_text("p.flash.success")
    wait_until(lambda: probe(lab, "c1", *target) == "ok", timeout=20, interval=0.5,
               what="%s:%d passing in observe mode" % target)
    shot(page, "gateways-observe-%d" % width)
    wait_until(lambda: [r for r in rows(lab, destination=target[0], observed="true") if r["port"] == str(target[1])],
               timeout=REPORTED, interval=1, what="the observed attempt on the server")
    page.goto("/blocked?destination=%s" % target[0])
    assert page.locator("#observed tr[data-id]").count() >= 1
    assert target[0] in page.inner_text("#observed")
    shot(page, "blocked-observed-%d" % width)
    page.goto("/gateways")
    page.click("text=Switch %s to enforce" % gateway)
    wait_until(lambda: probe(lab, "c1", *target) == "refused", timeout=20, interval=0.5,
               what="%s:%d refused again" % target)
    events = lab.api("GET", "/api/v1/audit", params={"action": "gateway.mode", "object_id": gateway}).json()
    assert [e["after"]["mode"] for e in events["items"][:2]] == ["enforce", "observe"]
    page.context.close()


@pytest.mark.parametrize("width", [1366, 390])
def test_a_refused_connection_is_named_by_the_dns_answer_that_led_to_it_and_allow_name_opens_it(  # noqa: F811
        ui, records, width):
    lab, browser = ui
    # An address of the lab's internet that answers HTTP and that no entry allows, a name of its own per width.
    address, name = "198.51.100.%d" % (170 + width % 7), "named-%d.lab.test" % width
    records("blocked-%d" % width, ["%s %s" % (address, name)])
    # c1 asks its gateway's og-dns (its resolv.conf), which forwards and notes which name gave which address.
    wait_until(lambda: dig(lab, "c1", name)[1] == [address], timeout=30, interval=1, what="%s served" % name)
    assert probe(lab, "c1", address) == "refused"
    wait_until(lambda: [r for r in rows(lab, destination=address) if name in r["names"]], timeout=REPORTED,
               interval=1, what="the attempt to %s named %s on the server" % (address, name))
    row = [r for r in rows(lab, destination=address) if name in r["names"]][0]
    assert (row["client"], row["port"], row["observed"]) == (C1, "80", False)

    page = login(browser, lab, "ada")
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/blocked?name=%s" % name)              # the name filter finds it too
    line = page.locator("#refused tr[data-id='%d']" % row["id"])
    assert line.locator("td").nth(2).inner_text() == address
    assert name in line.locator("td.names").inner_text().split(", ")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shot(page, "blocked-named-%d" % width)
    line.locator("select[name=duration]").select_option("1h")
    line.locator("button[value=name]").click()        # "Allow name": a domain entry, not the address
    flash = page.inner_text("p.flash.success")
    assert flash.startswith("Allowed %s (80/tcp) for 1 hour as entry " % name), flash
    # "as entry 7; asked for by ...": a domain entry has no revision until the server has resolved it.
    entry_id = int(re.search(r" as entry (\d+)[;, ]", flash).group(1))
    try:
        entry = lab.api("GET", "/api/v1/entries/%d" % entry_id).json()
        assert (entry["target"], entry["kind"], entry["ports"]) == (name, "domain", ["80/tcp"])
        # The server resolves the new entry, the gateways take it: the same connection now passes.
        wait_until(lambda: probe(lab, "c1", address) == "ok", timeout=30, interval=0.5,
                   what="%s:80 allowed through the name" % address)
        shot(page, "blocked-named-allowed-%d" % width)
    finally:
        assert lab.api("DELETE", "/api/v1/entries/%d" % entry_id).status_code == 204
