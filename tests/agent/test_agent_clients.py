"""Traffic per client address with the real og-server and og-gateway-agent and real traffic (tests/agent/
conftest.py's stack): two client addresses move known byte amounts through the gateway, and the server's top
clients and per-client series show each client's bytes, apart."""

import os

import pytest

from tests.support.agentlib import ALLOWED, OTHER, sample, scrape, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

# The agent reports on its counters cycle (15 s): allow two of them and some.
REPORTED = 45
FIRST, SECOND = "10.88.0.2", "10.88.0.3"


def clients(stack):
    status, body = stack.server.api("GET", "/api/v1/traffic/clients?gateway=gw1")
    assert status == 200, body
    return {c["client"]: c for c in body["clients"]}


def fetch(stack, address, size):
    """Download `size` bytes from the allowed service with the client's address `address`."""
    res = stack.topo.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "-m", "10",
                                 "--interface", address, "http://%s/bytes/%d" % (ALLOWED, size)])
    assert int(res.stdout) == size


def test_two_clients_bytes_reach_the_server_each_its_own(stack):
    stack.start_agent()
    stack.server.add(ALLOWED)
    stack.wait_converged()
    stack.topo.client.ip("addr", "add", SECOND + "/24", "dev", "eth0")
    fetch(stack, FIRST, 300000)
    fetch(stack, SECOND, 100000)
    fetch(stack, SECOND, 20000)
    # Refused: not counted for the client (it never crossed).
    assert stack.topo.client.run(["curl", "-s", "-m", "2", "--interface", SECOND, "http://%s/" % OTHER],
                                 check=False).returncode == 7

    def both():
        got = clients(stack)
        return sorted(got) == [FIRST, SECOND] and got[FIRST]["in_bytes"] >= 300000 and \
            got[SECOND]["in_bytes"] >= 120000

    wait_until(both, timeout=REPORTED, interval=0.5, what="both clients' downloads on the server")
    got = clients(stack)
    # Each client's bytes are its own: the payload plus headers, never the other's 300,000 or 120,000.
    assert 300000 <= got[FIRST]["in_bytes"] < 300000 + 20000
    assert 120000 <= got[SECOND]["in_bytes"] < 120000 + 20000
    assert 0 < got[FIRST]["out_bytes"] < 20000 and 0 < got[SECOND]["out_bytes"] < 20000
    assert got[FIRST]["in_packets"] > 0 and got[SECOND]["out_packets"] > 0
    # The per-client series adds up to the same bytes (one client, one gateway).
    status, series = stack.server.api("GET", "/api/v1/traffic/series?client=%s&gateway=gw1" % SECOND)
    assert status == 200 and series["client"] == SECOND
    assert sum(p["in_bytes"] for p in series["points"]) == got[SECOND]["in_bytes"]
    # The agent says how many clients it counts, and that none was left out; no per-client series on /metrics.
    samples = scrape(stack.topo.gw)
    assert sample(samples, "og_gateway_clients_counted") == 2
    assert sample(samples, "og_gateway_client_sets_full") == 0
    assert [key for key in samples if "client" in dict(key[1])] == []
