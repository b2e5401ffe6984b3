"""The real og-server and og-gateway-agent: the server's domain entries reach the agent's domains file for og-dns
(docs/protocol.md "Features", docs/dns.md), and an agent that does not ask for them (one from before) gets none."""

import json
import os

import pytest

from og_kernel import og_protocol
from tests.support.agentlib import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]


def read(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def names(path):
    content = read(path)
    return None if content is None else [(d["name"], d["ports"]) for d in content["domains"]]


def test_the_domains_file_follows_the_servers_domain_entries_and_survives_a_restart(quiet_stack):
    stack = quiet_stack
    agent = stack.start_agent()
    path = agent.domains_file
    stack.wait_converged()
    wait_until(lambda: names(path) == [], timeout=20, what="the empty domains file written")

    first = stack.server.add("partner.example")
    wait_until(lambda: names(path) == [("partner.example", [])], timeout=20, what="the new domain entry in the file")
    body = {"target": "api.partner.example", "ports": ["443/tcp", "8443/tcp"]}
    status, second = stack.server.api("POST", "/api/v1/entries", body)
    assert status == 201, second
    wait_until(lambda: names(path) == [("partner.example", []), ("api.partner.example", ["443/tcp", "8443/tcp"])],
               timeout=20, what="the second domain entry, with its ports")
    content = read(path)
    # Exactly the contract's shape (docs/dns.md): revision and the entries with their ids, nothing else.
    assert set(content) == {"revision", "domains"} and isinstance(content["revision"], int)
    assert content["domains"] == [{"entry": first["id"], "name": "partner.example", "ports": []},
                                  {"entry": second["id"], "name": "api.partner.example",
                                   "ports": ["443/tcp", "8443/tcp"]}]
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".domains-")] == []

    stack.server.delete(first["id"])
    wait_until(lambda: names(path) == [("api.partner.example", ["443/tcp", "8443/tcp"])], timeout=20,
               what="the deleted entry gone from the file")

    # kill -9 and a restart: the file stays as it is (fail-static), and the new session's equal frame does not
    # rewrite it (same inode).
    inode = os.stat(path).st_ino
    agent.kill9()
    assert names(path) == [("api.partner.example", ["443/tcp", "8443/tcp"])]
    stack.start_agent()
    agent.wait_log("holds the 1 domain entries of revision")
    assert os.stat(path).st_ino == inode
    stack.server.delete(second["id"])
    wait_until(lambda: names(path) == [], timeout=20, what="the last entry gone from the file")
    assert os.stat(path).st_ino != inode


def test_an_agent_that_does_not_announce_domains_gets_no_domains_frame_and_stays_connected(quiet_stack):
    stack = quiet_stack
    agent = stack.start_agent(extra=["--dns-domains-file", ""])
    stack.wait_converged()
    stack.server.add("old-agent.example")
    stack.server.add("198.51.100.10")
    stack.wait_converged()
    log = agent.log_since_start()
    assert "domains" not in log and "bad frame" not in log, log[-3000:]
    assert agent.alive() and stack.server.gateway()["connected"]
    assert not os.path.exists(agent.domains_file)
    with open(stack.server.log_file) as fh:
        assert "sent domains" not in fh.read()


def test_a_broken_domains_frame_is_refused_and_the_file_stays(gwns, scripted, start_agent):
    agent = start_agent()
    conn = scripted.next_connection()
    assert conn.next()["features"] == ["domains", "differs", "mode", "blocked", "clients"]
    for frame in og_protocol.snapshot(1, ["198.51.100.10/32"]):
        conn.send(frame)
    assert conn.next()["type"] == "ack"
    conn.send(og_protocol.domains(1, [{"entry": 4, "name": "partner.example", "ports": ["443/tcp"]}]))
    wait_until(lambda: read(agent.domains_file) == {"revision": 1, "domains": [
        {"entry": 4, "name": "partner.example", "ports": ["443/tcp"]}]}, timeout=20, what="the domains file")
    conn.send(json.dumps({"v": 1, "type": "domains", "revision": 2, "domains": [{"entry": 4, "name": ""}]}))
    answer = conn.next()
    assert (answer["type"], answer["code"]) == ("error", "bad_message")
    assert "domains name of entry 4" in answer["message"]
    assert conn.closed.wait(10) and conn.close_code == og_protocol.CLOSE_POLICY
    # Nothing of the broken frame written: og-dns keeps matching the last good domains.
    assert read(agent.domains_file)["revision"] == 1
    assert agent.alive()
