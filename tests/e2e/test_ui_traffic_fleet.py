"""Traffic over time and fleet truth in a real browser (Debian's chromium driven by Playwright) against the
deployed lab, at 1366 and 390 px wide; every page visited is saved as a screenshot in tests/output/ui/.

The lab's gateways run with IPv6 off (its default): an IPv6 entry is what each of them skips, and the fleet
page must say so by name ("skipped: no IPv6"), not as a bare "differs".
"""

import csv
import io
import re

# ui is the module's browser fixture (pytest finds it by name).
from tests.e2e.test_ui import login, shot, ui  # noqa: F401  pylint: disable=unused-import
from tests.support.lablib import LabHost, probe
from tests.support.nslib import wait_until

IP = "198.51.100.20"
V6 = "2001:db8::20"
C1 = "10.77.0.21"                      # c1 on the lab's LAN (scripts/lab)
SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


def create(lab, target):
    response = lab.api("POST", "/api/v1/entries", json={"target": target})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sized(page, size):
    page.set_viewport_size(SIZES[size])
    return page


def chart_has_traffic(page, chart="#rate-chart"):
    axis = float(page.get_attribute(chart + " line.axis", "y1"))
    points = page.get_attribute(chart + " polyline.series-in", "points").split()
    return min(float(p.split(",")[1]) for p in points) < axis


def test_traffic_over_time_and_what_each_gateway_skips_at_desktop_and_phone_width(ui):  # noqa: F811
    lab, browser = ui
    ids = [create(lab, IP), create(lab, V6)]
    try:
        wait_until(lambda: probe(lab, "c1", IP) == "ok", timeout=30, what="the entry reachable through the lab")
        c1 = LabHost(lab.ns("c1"))
        c1.run(["curl", "-sf", "-o", "/dev/null", "http://%s/bytes/3000000" % IP])
        page = sized(login(browser, lab, "vic"), "desktop")

        # The CSV of the rate over the last hour to this destination: every minute, the bytes counted.
        def exported():
            answer = page.request.get("/traffic.csv?window=1h&destination=%s" % IP)
            assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
            return list(csv.DictReader(io.StringIO(answer.text())))
        wait_until(lambda: sum(int(r["in_bytes"]) for r in exported()) >= 3000000, timeout=90, interval=3,
                   what="the destination's 3 MB in the CSV export")
        assert len(exported()) in (61, 62)
        # The same drawn by the server, its axis ending at now (UTC), rates in bytes per second.
        page.goto("/traffic?window=1h&destination=%s" % IP)
        assert chart_has_traffic(page)
        assert re.match(r"^now: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", page.text_content("#chart-end"))
        assert "to %s/32" % IP in page.inner_text("#traffic-over-time h2")
        labels = page.eval_on_selector_all("#rate-chart text.label", "els => els.map(e => e.textContent)")
        assert "0 B/s" in labels and len([t for t in labels if t.endswith("B/s")]) == 5
        link = page.get_attribute("#traffic-csv", "href")
        assert link.startswith("/traffic.csv?") and "destination=%s" % IP in link
        assert page.locator("#rate-chart").is_visible() and page.locator("#rate-chart-compact").is_hidden()
        shot(page, "traffic-over-time-desktop")
        for window in ("24h", "7d"):
            page.goto("/traffic?window=%s&destination=%s" % (window, IP))
            assert chart_has_traffic(page), window
        shot(page, "traffic-week-desktop")

        # Per client: c1's row among the top clients counts the 3 MB it received; its own series draws them.
        def c1_counted():
            page.goto("/traffic?window=1h")
            row = page.locator("#top-clients tbody tr[data-client='%s']" % C1)
            return row.count() == 1 and int(row.locator("td").nth(2).get_attribute("data-bytes")) >= 3000000
        wait_until(c1_counted, timeout=60, interval=3, what="c1's 3 MB among the top clients")
        top = page.locator("#top-clients tbody tr[data-client='%s']" % C1)
        assert top.locator("td.rate").inner_text().endswith("/s")
        shot(page, "traffic-clients-desktop")
        top.locator("a:has-text('over time')").click()
        assert chart_has_traffic(page)
        assert "of client %s" % C1 in page.inner_text("#traffic-over-time h2")
        assert "client=%s" % C1 in page.get_attribute("#traffic-csv", "href")
        shot(page, "traffic-client-desktop")

        # Fleet truth: each gateway names the IPv6 element it skips, and why, under its status.
        page.goto("/gateways")

        def named():
            rows = page.locator("#fleet tbody tr")
            return rows.count() == 2 and all(
                rows.nth(i).locator("td.sync .badge").inner_text() == "in sync; not enforced: 1 skipped: no IPv6"
                and rows.nth(i).locator("details.difference[data-kind=skipped] summary").inner_text()
                == "1 skipped: no IPv6" for i in range(2))
        wait_until(named, timeout=30, what="both gateways naming the IPv6 element they skip")
        group = page.locator("#fleet tbody tr[data-name=gw1] details.difference").first
        group.locator("summary").click()
        assert group.locator("li").inner_text() == "%s/128: IPv6 is off on this gateway" % V6
        # The page refreshes itself every 2 s; the group the operator opened stays open.
        refreshed = page.inner_text("#refreshed")
        wait_until(lambda: page.inner_text("#refreshed") not in (refreshed, "now"), timeout=15,
                   what="the fleet table refreshed")
        assert page.locator("#fleet tbody tr[data-name=gw1] details.difference").first.get_attribute(
            "open") is not None
        shot(page, "gateways-differences-desktop")

        # At 390 px: the compact drawing instead of the wide one, within the page's width.
        sized(page, "phone")
        page.goto("/traffic?window=1h&destination=%s" % IP)
        assert page.locator("#rate-chart").is_hidden() and page.locator("#rate-chart-compact").is_visible()
        box = page.locator("#rate-chart-compact").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert chart_has_traffic(page, "#rate-chart-compact")
        shot(page, "traffic-over-time-phone")
        page.goto("/traffic?window=1h")
        assert page.locator("#top-clients tbody tr[data-client='%s']" % C1).count() == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "traffic-clients-phone")
        page.goto("/gateways")
        wait_until(named, timeout=30, what="the fleet's differences at 390 px")
        page.locator("#fleet tbody tr[data-name=gw2] details.difference summary").first.click()
        assert "IPv6 is off on this gateway" in page.inner_text("#fleet tbody tr[data-name=gw2] td.sync")
        shot(page, "gateways-differences-phone")
        page.context.close()
    finally:
        for entry_id in ids:
            lab.api("DELETE", "/api/v1/entries/%d" % entry_id)
