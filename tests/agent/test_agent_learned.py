"""The real og-server and og-gateway-agent: what og-dns learned reaches the server (docs/dns.md, "Fleet-wide
learning"). A spool file written by og-dns's own Spool class goes out as a learned frame; the server stores the
addresses that match their entry and pass the internal-network rules, shows them on the entry with the gateway
whose DNS learned them, publishes them through the change log (so they land in the gateway's kernel set as in
every other gateway's), acknowledges the batch (the agent deletes the file), and removes them when their expiry
has passed."""

import os
import time

import pytest

from gateway_agent.dns.spool import Spool
from tests.support.agentlib import kernel_elements, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]


def addresses(stack, entry_id):
    status, body = stack.server.api("GET", "/api/v1/entries/%d" % entry_id)
    assert status == 200, body
    return {a["address"]: a for a in body["addresses"]}


def test_learned_addresses_are_stored_shown_published_acked_and_expire(quiet_stack):
    stack = quiet_stack
    agent = stack.start_agent()
    stack.wait_converged()
    wild = stack.server.add("*.learn.example")
    other = stack.server.add("other.example")
    stack.wait_converged()
    assert kernel_elements(stack.topo.gw) == []

    now = int(time.time())
    spool = Spool(agent.spool_dir, "gw1")
    spool.note_learned(wild["id"], "api.learn.example", "203.0.113.50", [], 300, now + 3600, now)
    spool.note_learned(wild["id"], "short.learn.example", "203.0.113.53", [], 5, now + 8, now)
    # Refused: an internal address, a name the entry does not cover, a name of another entry.
    spool.note_learned(wild["id"], "db.learn.example", "10.1.2.3", [], 300, now + 3600, now)
    spool.note_learned(wild["id"], "api.other.example", "203.0.113.51", [], 300, now + 3600, now)
    spool.note_learned(other["id"], "api.learn.example", "203.0.113.52", [], 300, now + 3600, now)
    path = spool.flush(now=now)
    assert path and os.path.exists(path)

    wait_until(lambda: not os.path.exists(path), timeout=20, what="the spool file acked and deleted")
    learned = addresses(stack, wild["id"])
    assert sorted(learned) == ["203.0.113.50/32", "203.0.113.53/32"]
    row = learned["203.0.113.50/32"]
    assert (row["source"], row["learned_via"], row["published"]) == ("learned", "gw1", True)
    assert row["expires_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(now + 3600)))
    assert addresses(stack, other["id"]) == {}
    # Through the change log, as every gateway gets it: the gateway's kernel set holds the learned addresses.
    wait_until(lambda: kernel_elements(stack.topo.gw) == ["203.0.113.50/32", "203.0.113.53/32"], timeout=20,
               what="the learned addresses in the gateway's kernel set")
    stack.wait_converged()

    # The short-lived one expires: housekeeping removes it from the entry and from every gateway's set.
    wait_until(lambda: kernel_elements(stack.topo.gw) == ["203.0.113.50/32"], timeout=30,
               what="the expired learned address gone from the kernel set")
    assert sorted(addresses(stack, wild["id"])) == ["203.0.113.50/32"]

    # At least once: the same batch again (an ack lost) changes nothing but last_seen.
    again = Spool(agent.spool_dir, "gw1")
    again.note_learned(wild["id"], "api.learn.example", "203.0.113.50", [], 300, now + 3600, now)
    path = again.flush(now=now + 1)
    wait_until(lambda: not os.path.exists(path), timeout=20, what="the second spool file acked")
    assert sorted(addresses(stack, wild["id"])) == ["203.0.113.50/32"]
    assert kernel_elements(stack.topo.gw) == ["203.0.113.50/32"]
    assert agent.alive()
