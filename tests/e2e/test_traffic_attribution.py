"""Traffic attribution on the lab with real traffic: which entry the bytes belong to (issue 14, point 3).

Bytes go from client c1 through gw1 to the lab's "internet"; the figures the server shows (REST API) and the
agent exports (:9900/metrics) are compared with gw1's kernel set counters, read with `ipset save`. The agent
reports every 15 s (gateway_agent/client.py COUNTERS_EVERY), so the server's figures are waited for.
Payloads stay below the UI test's 3,000,000 bytes so its "top destination" stays its own.
"""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from og_kernel.og_firewall import parse_save
from tests.support.lablib import LabHost, gateway_elements, probe
from tests.support.nslib import wait_until

SIZE = 1500000
REPORTED = 90          # seconds: a few counters frames (15 s) and flushes (5 s) on a loaded machine


def kernel(lab, set_name, member):
    """(packets, bytes) of one member of one of gw1's sets, as the kernel counts them now."""
    out = LabHost(lab.ns("gw1")).run(["ipset", "list", "-o", "save", set_name]).stdout
    return parse_save(out)[set_name][member]


def kernel_bytes(lab, out_set, member):
    """{"out_bytes": ..., "in_bytes": ...} of one element's member (its out set and the matching -in set)."""
    return {"out_bytes": kernel(lab, out_set, member)[1], "in_bytes": kernel(lab, out_set + "-in", member)[1]}


def fetch(lab, url):
    got = LabHost(lab.ns("c1")).run(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url])
    assert int(got.stdout) == SIZE


def entry_traffic(lab, entry_id):
    response = lab.api("GET", "/api/v1/entries/%d/traffic" % entry_id)
    assert response.status_code == 200, response.text
    return response.json()


def scrape(lab):
    """{(name, sorted labels): value} of gw1's agent metrics."""
    text = LabHost(lab.ns("gw1")).run(["curl", "-sf", "-m", "30", "http://127.0.0.1:9900/metrics"]).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def entry_series(samples, entry, shared, direction):
    return samples.get(("og_gateway_entry_bytes_total",
                        (("direction", direction), ("entry", entry), ("shared", shared))))


def create(lab, body):
    created = lab.api("POST", "/api/v1/entries", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def resolved(lab, entry_id, addresses):
    wait_until(lambda: sorted(a["address"] for a in lab.api("GET", "/api/v1/entries/%d" % entry_id).json()
                              ["addresses"]) == addresses, timeout=30, interval=0.5, what="the name resolved")


def settled(lab):
    """Every gateway at the head revision with a matching digest."""
    wait_until(lambda: all(gw["connected"] and gw["lag"] == 0 and gw["digest_match"]
                           for gw in lab.api("GET", "/api/v1/gateways").json()["items"]),
               timeout=30, what="gateways at the head revision")


@pytest.fixture
def made(deployed):
    """Entries made by a test (ids), deleted after it."""
    lab = deployed[0]
    ids = []
    yield ids
    for entry_id in ids:
        lab.api("DELETE", "/api/v1/entries/%d" % entry_id)


def test_a_port_scoped_entry_on_an_address_a_name_also_produces_counts_its_own_traffic(deployed, records, made):
    lab = deployed[0]
    assert "198.51.100.20" not in gateway_elements(lab) and "198.51.100.20,tcp:80" not in \
        gateway_elements(lab, "og-allowp4")    # fresh members: their kernel counters start at 0
    records("traffic-port", ["198.51.100.20 web.traffic.lab.test"])
    time.sleep(0.5)   # inotify: let dnsmasq read the new file
    made.append(create(lab, {"target": "web.traffic.lab.test"}))
    made.append(create(lab, {"target": "198.51.100.20", "ports": ["80/tcp"]}))
    name, port = made
    resolved(lab, name, ["198.51.100.20/32"])
    settled(lab)
    wait_until(lambda: probe(lab, "c1", "198.51.100.20") == "ok", timeout=10, what="198.51.100.20 allowed")

    fetch(lab, "http://198.51.100.20/bytes/%d" % SIZE)
    scoped = kernel_bytes(lab, "og-allowp4", "198.51.100.20,tcp:80")
    plain = kernel_bytes(lab, "og-allow4", "198.51.100.20")
    # The kernel counted port 80 on the port-scoped element only.
    assert scoped["in_bytes"] >= SIZE
    assert plain == {"out_bytes": 0, "in_bytes": 0}

    # The server shows the kernel's figures, for the entry whose element matched, and nothing for the name.
    wait_until(lambda: {k: entry_traffic(lab, port)[k] for k in scoped} == kernel_bytes(
        lab, "og-allowp4", "198.51.100.20,tcp:80"), timeout=REPORTED, interval=2,
        what="the port-scoped entry's traffic equal to the kernel's counters")
    scoped = kernel_bytes(lab, "og-allowp4", "198.51.100.20,tcp:80")
    got = entry_traffic(lab, port)
    assert (got["entry"], got["deleted"], got["shared_out_bytes"], got["shared_in_bytes"]) == (
        "198.51.100.20 (80/tcp)", False, 0, 0)
    assert {k: entry_traffic(lab, name)[k] for k in ("out_bytes", "in_bytes", "shared_in_bytes")} == {
        "out_bytes": 0, "in_bytes": 0, "shared_in_bytes": 0}
    # ... and so does the agent, in the port-scoped entry's own series.
    samples = scrape(lab)
    assert entry_series(samples, "198.51.100.20 (80/tcp)", "false", "in") == scoped["in_bytes"]
    assert entry_series(samples, "web.traffic.lab.test", "false", "in") == 0


# Slow (about 30 s): the figures come from the agents' counters frames, sent every 15 s, and the server's
# per-minute flush; the test waits for them rather than faking them.
def test_two_names_on_one_address_show_it_shared_and_totals_count_it_once(deployed, records, made):
    lab = deployed[0]
    assert "203.0.113.10" not in gateway_elements(lab)
    records("traffic-two", ["203.0.113.10 one.traffic.lab.test", "203.0.113.10 two.traffic.lab.test"])
    time.sleep(0.5)
    made.append(create(lab, {"target": "one.traffic.lab.test"}))
    made.append(create(lab, {"target": "two.traffic.lab.test"}))
    for entry_id in made:
        resolved(lab, entry_id, ["203.0.113.10/32"])
    settled(lab)
    wait_until(lambda: probe(lab, "c1", "203.0.113.10") == "ok", timeout=10, what="203.0.113.10 allowed")

    def shown():
        fields = ("out_bytes", "in_bytes", "shared_out_bytes", "shared_in_bytes")
        return [{k: entry_traffic(lab, entry_id)[k] for k in fields} for entry_id in made]

    def as_shared(counted):
        return dict(counted, shared_out_bytes=counted["out_bytes"], shared_in_bytes=counted["in_bytes"])

    def reported():
        # Each name shows the address's bytes, marked shared: they are the same bytes, not twice as many.
        return shown() == [as_shared(kernel_bytes(lab, "og-allow4", "203.0.113.10"))] * 2
    wait_until(reported, timeout=REPORTED, interval=2, what="the probe's bytes reported")
    probed = kernel_bytes(lab, "og-allow4", "203.0.113.10")
    before = lab.api("GET", "/api/v1/traffic").json()["total"]

    fetch(lab, "http://203.0.113.10/bytes/%d" % SIZE)
    assert kernel_bytes(lab, "og-allow4", "203.0.113.10")["in_bytes"] >= SIZE
    wait_until(reported, timeout=REPORTED, interval=2, what="both names showing the kernel's bytes as shared")
    counted = kernel_bytes(lab, "og-allow4", "203.0.113.10")
    assert entry_traffic(lab, made[0])["shared_with"] == {"203.0.113.10/32": ["two.traffic.lab.test"]}
    summary = lab.api("GET", "/api/v1/traffic").json()
    listed = {e["entry_id"]: e for e in summary["entries"]}
    assert [listed[i]["shared_in_bytes"] for i in made] == [counted["in_bytes"]] * 2
    # The total grew by the kernel's figure once (nothing else crossed the lab meanwhile).
    after = summary["total"]
    assert after["in_bytes"] - before["in_bytes"] == counted["in_bytes"] - probed["in_bytes"]
    assert after["out_bytes"] - before["out_bytes"] == counted["out_bytes"] - probed["out_bytes"]
    # The agent: one series for the pair, so sum() over entries counts the address once.
    samples = scrape(lab)
    pair = "one.traffic.lab.test + two.traffic.lab.test"
    assert entry_series(samples, pair, "true", "in") == counted["in_bytes"]
    assert entry_series(samples, "one.traffic.lab.test", "false", "in") is None
    assert entry_series(samples, "two.traffic.lab.test", "false", "in") is None


def test_an_entry_deleted_after_its_traffic_keeps_it_by_name(deployed, made):
    lab = deployed[0]
    assert "198.51.100.10,tcp:8443" not in gateway_elements(lab, "og-allowp4")
    entry_id = create(lab, {"target": "198.51.100.10", "ports": ["8443/tcp"]})
    made.append(entry_id)
    settled(lab)
    wait_until(lambda: probe(lab, "c1", "198.51.100.10", 8443) == "ok", timeout=10, what="port 8443 allowed")
    fetch(lab, "http://198.51.100.10:8443/bytes/%d" % SIZE)
    assert kernel_bytes(lab, "og-allowp4", "198.51.100.10,tcp:8443")["in_bytes"] >= SIZE
    wait_until(lambda: {k: entry_traffic(lab, entry_id)[k] for k in ("out_bytes", "in_bytes")} == kernel_bytes(
        lab, "og-allowp4", "198.51.100.10,tcp:8443"), timeout=REPORTED, interval=2,
        what="the entry's traffic equal to the kernel's counters")
    counted = kernel_bytes(lab, "og-allowp4", "198.51.100.10,tcp:8443")

    assert lab.api("DELETE", "/api/v1/entries/%d" % entry_id).status_code == 204
    settled(lab)
    assert lab.api("GET", "/api/v1/entries/%d" % entry_id).status_code == 404
    gone = entry_traffic(lab, entry_id)
    assert {k: gone[k] for k in ("entry", "deleted", "out_bytes", "in_bytes")} == dict(
        counted, entry="198.51.100.10 (8443/tcp)", deleted=True)
    listed = [e for e in lab.api("GET", "/api/v1/traffic").json()["entries"] if e["entry_id"] == entry_id]
    assert [(e["entry"], e["deleted"], e["in_bytes"]) for e in listed] == [
        ("198.51.100.10 (8443/tcp)", True, counted["in_bytes"])]
