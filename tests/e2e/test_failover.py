"""Client routes on the lab: failover from gw1 to gw2 and back, and og-route repairing a route deleted by hand."""

import ipaddress
import threading
import time

import pytest

from tests.support.lablib import LabHost, probe
from tests.support.nslib import sh, wait_until

TARGET = "198.51.100.10"


def via(lab, host, address):
    """The next hop the client's kernel uses for an address."""
    out = LabHost(lab.ns(host)).run(["ip", "route", "get", address]).stdout
    words = out.split()
    return words[words.index("via") + 1] if "via" in words else None


class Stream:
    """New TCP connections from a client, one after another, each recorded with its time and result."""

    def __init__(self, lab, host, address):
        self.results = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lab, host, address), daemon=True)
        self._thread.start()

    def _run(self, lab, host, address):
        while not self._stop.is_set():
            self.results.append((time.monotonic(), probe(lab, host, address)))
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def gap(self, since):
        """Seconds from the last success before the first failure after `since` to the next success."""
        after = [(t, r) for t, r in self.results if t >= since]
        failures = [t for t, r in after if r != "ok"]
        if not failures:
            return 0.0
        before = [t for t, r in self.results if t < failures[0] and r == "ok"]
        recovered = [t for t, r in after if t > failures[-1] and r == "ok"]
        return (recovered[0] if recovered else float("inf")) - (before[-1] if before else since)


@pytest.fixture
def allowed(deployed):
    lab = deployed[0]
    created = lab.api("POST", "/api/v1/entries", json={"target": TARGET})
    assert created.status_code == 201, created.text
    try:
        wait_until(lambda: probe(lab, "c1", TARGET) == "ok", timeout=30, interval=0.5,
                   what="allowed address reachable")
        yield lab
    finally:                      # even when the wait fails: a leaked entry would open TARGET for later tests
        lab.api("DELETE", "/api/v1/entries/%d" % created.json()["id"])


def test_new_connections_keep_working_when_the_primary_gateway_goes_down_and_comes_back(allowed):
    lab = allowed
    assert via(lab, "c1", TARGET) == "10.77.0.1"
    stream = Stream(lab, "c1", TARGET)
    link = ["ip", "-n", lab.ns("sw"), "link", "set", "lan-gw1"]
    try:
        time.sleep(1)
        down = time.monotonic()
        sh(link + ["down"])
        wait_until(lambda: via(lab, "c1", TARGET) == "10.77.0.2", timeout=15, what="routes moved to gw2")
        wait_until(lambda: stream.results[-1][1] == "ok" and stream.results[-1][0] > down, timeout=15,
                   what="connections through gw2")
        failover_gap = stream.gap(down)
        time.sleep(2)
        assert all(r == "ok" for t, r in stream.results if t > down + failover_gap + 0.5)
        up = time.monotonic()
        sh(link + ["up"])
        wait_until(lambda: via(lab, "c1", TARGET) == "10.77.0.1", timeout=15, what="routes back on gw1")
        time.sleep(2)
        failback_gap = stream.gap(up)
    finally:
        sh(link + ["up"], check=False)
        stream.stop()
    print("failover gap %.2fs, failback gap %.2fs, %d connections"
          % (failover_gap, failback_gap, len(stream.results)))
    assert failover_gap < float("inf") and failback_gap < float("inf")
    assert stream.results[-1][1] == "ok"


def test_og_route_restores_a_route_deleted_by_hand(deployed):
    lab = deployed[0]
    client = LabHost(lab.ns("c2"))
    routes = client.run(["ip", "route", "show", "proto", "191"]).stdout.splitlines()
    covering = [line.split()[0] for line in routes
                if ipaddress.ip_address(TARGET) in ipaddress.ip_network(line.split()[0])]
    assert covering, routes
    client.run(["ip", "route", "del", covering[0], "proto", "191", "metric", "100"])
    assert via(lab, "c2", TARGET) != "10.77.0.1"
    wait_until(lambda: via(lab, "c2", TARGET) == "10.77.0.1", timeout=10, what="route re-added by og-route")
