"""Domain entries on the lab: the server resolves through the lab's dnsmasq, whose records the test rewrites.

Lab timings (inventories/lab): resolve_interval 10 s, grace 20 s, dnsmasq TTL 5 s."""

import os
import signal
import time

from tests.support.lablib import gateway_elements, probe
from tests.support.nslib import wait_until

INTERVAL = 10
GRACE = 20


def dnsmasq_pid(lab):
    with open(os.path.join(lab.dir, "run", "dnsmasq.pid")) as fh:
        return int(fh.read().strip())


def entry_addresses(lab, entry_id):
    return {a["address"]: a for a in lab.api("GET", "/api/v1/entries/%d" % entry_id).json()["addresses"]}


def test_a_domain_follows_its_records_with_a_grace_period(deployed, records):
    lab = deployed[0]
    records("moving", ["198.51.100.10 moving.lab.test"])
    time.sleep(0.5)   # inotify: let dnsmasq read the new file
    created = lab.api("POST", "/api/v1/entries", json={"target": "moving.lab.test"})
    assert created.status_code == 201, created.text
    entry = created.json()
    # Resolved in the request: the answer already holds the address.
    assert [a["address"] for a in entry["addresses"]] == ["198.51.100.10/32"]
    wait_until(lambda: probe(lab, "c1", "198.51.100.10") == "ok", timeout=5, what="domain's address reachable")
    assert probe(lab, "c1", "203.0.113.10") == "refused"

    # The record moves: the new address opens within one interval (plus the TTL and a second), no operator.
    records("moving", ["203.0.113.10 moving.lab.test"])
    moved = time.monotonic()
    wait_until(lambda: probe(lab, "c1", "203.0.113.10") == "ok", timeout=INTERVAL + 5 + 5,
               what="new address reachable")
    # The old one stays until its grace deadline ...
    assert probe(lab, "c1", "198.51.100.10") == "ok"
    old = entry_addresses(lab, entry["id"])["198.51.100.10/32"]
    assert old["grace_until"] is not None and old["published"] is True
    why = lab.api("GET", "/api/v1/addresses/198.51.100.10").json()
    assert why["allowed"] and why["entries"][0]["until"] == old["grace_until"]
    # ... and then new connections are refused.
    wait_until(lambda: probe(lab, "c1", "198.51.100.10") == "refused", timeout=GRACE + INTERVAL + 10,
               what="old address refused after the grace period")
    assert time.monotonic() - moved >= GRACE - 1
    assert "198.51.100.10/32" not in entry_addresses(lab, entry["id"])
    assert probe(lab, "c1", "203.0.113.10") == "ok"
    assert lab.api("DELETE", "/api/v1/entries/%d" % entry["id"]).status_code == 204
    wait_until(lambda: probe(lab, "c1", "203.0.113.10") == "refused", timeout=5, what="deleted domain closed")


def test_a_name_pointing_inside_is_never_published(deployed, records):
    lab = deployed[0]
    kernel_before = gateway_elements(lab)
    records("rebind", ["10.77.0.10 rebind.lab.test", "127.0.0.1 rebind.lab.test"])
    time.sleep(0.5)
    entry = lab.api("POST", "/api/v1/entries", json={"target": "rebind.lab.test"}).json()
    shown = {a["address"]: a for a in entry["addresses"]}
    assert set(shown) == {"10.77.0.10/32", "127.0.0.1/32"}
    assert all(not a["published"] and "internal network" in a["refused"] for a in shown.values())
    wait_until(lambda: all(g["lag"] == 0 for g in lab.api("GET", "/api/v1/gateways").json()["items"]),
               timeout=10, what="gateways at the head revision")
    assert gateway_elements(lab) == kernel_before      # nothing of the rebinding name reached the kernel
    lab.api("DELETE", "/api/v1/entries/%d" % entry["id"])


# Slow (about 50 s): the outage must outlast the grace period and two resolve intervals of the lab to prove
# that a DNS failure removes nothing; shorter would prove nothing.
def test_a_dns_outage_of_several_intervals_removes_nothing(deployed, records):
    lab = deployed[0]
    records("steady", ["198.51.100.20 steady.lab.test"])
    time.sleep(0.5)
    entry = lab.api("POST", "/api/v1/entries", json={"target": "steady.lab.test"}).json()
    wait_until(lambda: probe(lab, "c1", "198.51.100.20") == "ok", timeout=5, what="reachable")
    pid = dnsmasq_pid(lab)
    os.kill(pid, signal.SIGSTOP)       # the lab's dnsmasq (started by scripts/lab) stops answering
    try:
        time.sleep(GRACE + 2 * INTERVAL)   # longer than the grace period: an outage must not start it
        assert probe(lab, "c1", "198.51.100.20") == "ok"
        state = lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()
        assert "timeout" in (state["resolve_error"] or "").lower()
        assert state["addresses"][0]["grace_until"] is None
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: lab.api("GET", "/api/v1/entries/%d" % entry["id"]).json()["resolve_error"] is None,
               timeout=INTERVAL + 10, what="resolution recovers")
    lab.api("DELETE", "/api/v1/entries/%d" % entry["id"])
