"""Refused attempts and observe mode with the real og-server and og-gateway-agent and real traffic
(tests/agent/conftest.py's stack): a refused connection shows on the server with its client, destination and
port; an admin switches the gateway to observe through the API and the same destination then passes, bytes
and all, recorded apart as would-have-been-refused; back to enforce in one call."""

import os

import pytest

from tests.support.agentlib import ALLOWED, OTHER, wait_until
from tests.support.nslib import tcp_probe

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

# The agent reports on its counters cycle (15 s): allow two of them and some.
REPORTED = 45


def rows(stack, **query):
    status, body = stack.server.api("GET", "/api/v1/blocked?" + "&".join("%s=%s" % kv for kv in query.items()))
    assert status == 200, body
    return [(i["gateway"], i["client"], i["destination"], i["proto"], i["port"], i["count"], i["observed"])
            for i in body["items"]]


def test_a_refused_connection_shows_on_the_server_and_observe_mode_lets_it_through_recorded_apart(stack):
    stack.start_agent()
    stack.server.add(ALLOWED)
    stack.wait_converged()
    assert stack.server.gateway()["mode"] == "enforce"
    for dummy in range(2):
        assert tcp_probe(stack.topo.client, OTHER, 80, timeout=2) == "refused"
    assert stack.topo.reaches(ALLOWED)   # allowed traffic is never recorded
    wait_until(lambda: rows(stack) == [("gw1", "10.88.0.2", OTHER, "tcp", "80", 2, False)], timeout=REPORTED,
               interval=0.5, what="the two refused attempts on the server")

    status, body = stack.server.api("PUT", "/api/v1/gateways/gw1/mode", {"mode": "observe"})
    assert status == 200 and body["mode"] == "observe", body
    stack.agent.wait_log("gateway mode enforce -> observe", timeout=20)
    code, size = stack.topo.curl(OTHER)
    assert code == 0 and size > 0            # bytes through the gateway to what enforce refused
    wait_until(lambda: ("gw1", "10.88.0.2", OTHER, "tcp", "80", 1, True) in rows(stack, observed="true"),
               timeout=REPORTED, interval=0.5, what="the observed attempt on the server")
    assert rows(stack, observed="false") == [("gw1", "10.88.0.2", OTHER, "tcp", "80", 2, False)]
    assert stack.server.gateway()["mode"] == "observe"

    # Restarted while no server answers, the agent runs the mode the server set, as it keeps the rules.
    stack.server.stop()
    assert stack.agent.terminate() == 0
    stack.start_agent()
    stack.agent.wait_log("gateway mode observe, as a server last set it (the configuration says enforce)")
    stack.agent.wait_log("restored saved state")
    wait_until(lambda: stack.topo.curl(OTHER)[0] == 0, timeout=20, interval=0.5,
               what="the destination enforce refuses passing after the restart")
    stack.server.start()
    stack.wait_converged(timeout=60)
    assert "gateway mode" not in stack.agent.log_since_start().split("gateway mode observe, as a server")[1]

    status, body = stack.server.api("PUT", "/api/v1/gateways/gw1/mode", {"mode": "enforce"})
    assert status == 200 and body["before"] == "observe", body
    stack.agent.wait_log("gateway mode observe -> enforce", timeout=20)
    assert tcp_probe(stack.topo.client, OTHER, 80, timeout=2) == "refused"
    events = stack.server.api("GET", "/api/v1/audit?action=gateway.mode")[1]["items"]
    assert [e["after"]["mode"] for e in events] == ["enforce", "observe"]
