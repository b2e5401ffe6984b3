"""The agent against a scripted WebSocket server (docs/protocol.md), with its real kernel work in a namespace.

The test plays the server frame by frame with wsproto; the agent is the real og-gateway-agent process inside
a gateway namespace; what the agent claims (hello and ack digests) is compared with what the test itself
reads from the kernel's ipsets.
"""

import json
import os
import re

import pytest

from gateway_agent import __version__
from og_kernel import og_protocol
from og_kernel.og_elements import Holding, digest
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS
from tests.support.agentlib import (TOKEN, ScriptedServer, forward_rules, http_status, kernel_elements, sample,
                                    scrape, wait_until)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

A = "198.51.100.10/32"
B = "198.51.100.64/26"
C = "203.0.113.10/32"
P = "198.51.100.20/32 443/tcp"
D = "198.51.100.40/32"
E = "203.0.113.0/28"
HOLDS = Holding([4], DEFAULT_INTERNAL_NETWORKS).to_wire()   # the defaults: IPv6 off, the default internal networks
# What the agent announces in its hello beyond the base protocol, and the mode it runs.
SPEAKS = {"features": ["domains", "differs", "mode", "blocked", "clients"], "mode": "enforce"}


def snapshot(revision, *chunks):
    return [{"type": "snapshot", "revision": revision, "chunk": i, "chunks": len(chunks), "elements": list(c)}
            for i, c in enumerate(chunks)]


def delta(base, revision, add=(), remove=()):
    return {"type": "delta", "base": base, "revision": revision, "add": list(add), "remove": list(remove)}


def ack(revision, elements):
    return {"v": 1, "type": "ack", "revision": revision, "digest": digest(elements), "count": len(elements)}


def connect_and_snapshot(scripted, revision, elements):
    """Take the agent's connection, answer its hello with a snapshot, check the ack; return the connection."""
    conn = scripted.next_connection()
    assert conn.next()["type"] == "hello"
    for frame in snapshot(revision, elements):
        conn.send(frame)
    assert conn.next() == ack(revision, elements)
    return conn


def test_hello_snapshot_deltas_and_acks_follow_the_kernel(gwns, scripted, start_agent, tmp_path):
    # A state saved by an earlier run: it is back in the kernel before the agent says hello.
    state_dir = tmp_path / "agent" / "state"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(json.dumps({"revision": 3, "elements": ["203.0.113.77/32"]}))
    agent = start_agent()

    conn = scripted.next_connection()
    assert conn.target == "/ws/gateway"
    assert conn.headers["authorization"] == "Bearer " + TOKEN
    assert conn.next() == {"v": 1, "type": "hello", "name": "gw1", "agent_version": __version__, "revision": 3,
                           "digest": digest(["203.0.113.77/32"]), "holds": HOLDS, **SPEAKS}
    assert kernel_elements(gwns) == ["203.0.113.77/32"]

    # A snapshot in two chunks replaces everything at once; the ack's digest is the kernel's.
    for frame in snapshot(5, [A, B], [C, P]):
        conn.send(frame)
    assert conn.next() == ack(5, [A, B, C, P])
    assert kernel_elements(gwns) == sorted([A, B, C, P])
    assert kernel_elements(gwns, "og-allow4-in", "og-allowp4-in") == sorted([A, B, C, P])

    # Deltas apply in order, each acknowledged with its own revision.
    conn.send(delta(5, 6, add=[D], remove=[A]))
    conn.send(delta(6, 7, add=[A], remove=[C, P]))
    assert conn.next() == ack(6, [B, C, P, D])
    assert conn.next() == ack(7, [A, B, D])
    assert kernel_elements(gwns) == sorted([A, B, D])

    # A delta that does not start at the applied revision is not applied: the agent says hello again.
    conn.send(delta(9, 10, add=[E]))
    assert conn.next() == {"v": 1, "type": "hello", "name": "gw1", "agent_version": __version__, "revision": 7,
                           "digest": digest([A, B, D]), "holds": HOLDS, **SPEAKS}
    assert kernel_elements(gwns) == sorted([A, B, D])
    for frame in snapshot(10, [A, E]):
        conn.send(frame)
    assert conn.next() == ack(10, [A, E])
    assert kernel_elements(gwns) == sorted([A, E])
    assert digest(kernel_elements(gwns)) == digest([A, E])

    # Nothing missed: an empty delta is acknowledged as is.
    conn.send(delta(10, 10))
    assert conn.next() == ack(10, [A, E])

    saved = agent.saved_state()
    assert (saved["revision"], saved["elements"]) == (10, sorted([A, E]))
    assert agent.alive()


def test_acks_name_what_the_kernel_lacks_and_holds_beyond_the_applied_set(gwns, scripted, start_agent):
    """FEATURE_DIFFERS, negotiated: plain acks to a server that does not announce it, `differs` in every ack to
    one that does, read back from the real kernel."""
    start_agent(extra=["--drift-interval", "3600"])   # no drift repair between the test's change and the ack
    conn = scripted.next_connection()
    assert "differs" in conn.next()["features"]
    for frame in snapshot(1, [A, B]):
        conn.send(frame)
    assert conn.next() == ack(1, [A, B])
    same = {"missing": [], "extra": [], "missing_count": 0, "extra_count": 0}
    for frame in snapshot(2, [A, B]):
        conn.send(dict(frame, features=["differs"]))
    assert conn.next() == dict(ack(2, [A, B]), differs=same)
    # Behind the agent's back: A leaves the out set (so it is not really allowed), X enters both directions.
    gwns.run(["ipset", "del", "og-allow4", "198.51.100.10"])
    for name in ("og-allow4", "og-allow4-in"):
        gwns.run(["ipset", "add", name, "203.0.113.99"])
    conn.send(dict(delta(2, 2), features=["differs"]))
    assert conn.next() == dict(ack(2, [B, "203.0.113.99/32"]), differs={
        "missing": [A], "extra": ["203.0.113.99/32"], "missing_count": 1, "extra_count": 1})
    # A snapshot repairs the kernel, and the next ack says so.
    for frame in snapshot(3, [A, B]):
        conn.send(dict(frame, features=["differs"]))
    assert conn.next() == dict(ack(3, [A, B]), differs=same)
    assert kernel_elements(gwns) == sorted([A, B])


def test_clients_frames_go_only_to_a_server_that_announced_them(gwns, scripted, start_agent):
    """FEATURE_CLIENTS, negotiated: a server from before it gets counters frames only (it would refuse the frame
    type); one that announces it gets a clients frame on every counters cycle, read from the real kernel's
    per-client sets (empty here: no client sent anything)."""
    start_agent()
    conn = connect_and_snapshot(scripted, 1, [A])
    # Two counters cycles in a row, nothing between them: no clients frame to this server (heartbeats keep the
    # agent from taking the scripted server for dead meanwhile).
    assert conn.next(timeout=40, skip=("heartbeat",))["type"] == "counters"
    conn.send(og_protocol.heartbeat(1.0))
    assert conn.next(timeout=40, skip=("heartbeat",))["type"] == "counters"
    conn.send(dict(delta(1, 1), features=["clients"]))
    # A counters cycle that was under way may already send a clients frame before the ack goes out.
    assert conn.next(skip=("heartbeat", "counters", "clients")) == ack(1, [A])
    assert conn.next(timeout=40, skip=("heartbeat", "clients"))["type"] == "counters"
    frame = typed(conn)   # right after the counters frame
    assert (type(frame), frame.clients, frame.full) == (og_protocol.Clients, (), False)


def test_removing_a_port_that_a_range_also_covers_keeps_the_range_whole(gwns, scripted, start_agent):
    wide, narrow = "198.51.100.30/32 8000-8002/tcp", "198.51.100.30/32 8001/tcp"
    start_agent()
    conn = connect_and_snapshot(scripted, 1, [wide, narrow])

    conn.send(delta(1, 2, remove=[narrow]))
    # The kernel shares port 8001 between both elements: deleting it alone would punch a hole in the range.
    assert conn.next() == ack(2, [wide])
    assert kernel_elements(gwns) == ["198.51.100.30/32 8000/tcp", "198.51.100.30/32 8001/tcp",
                                     "198.51.100.30/32 8002/tcp"]


BAD_FRAMES = [
    ("{not json", "not valid JSON"),
    ({"type": "surprise"}, "unknown message type 'surprise'"),
    (json.dumps({"v": 1, "type": "delta", "base": 1, "revision": 2, "add": [], "remove": [],
                 "pad": "x" * (1 << 20)}), "larger than the 1048576-byte limit"),
    ({"type": "delta", "base": 1, "revision": 2, "add": ["198.51.100.999/32"], "remove": []}, "198.51.100.999"),
]


def test_bad_frames_are_refused_logged_and_the_rules_stay(gwns, scripted, start_agent):
    agent = start_agent()
    conn = connect_and_snapshot(scripted, 1, [A, B])

    for frame, words in BAD_FRAMES:
        conn.send(frame)
        answer = conn.next()
        assert (answer["type"], answer["code"]) == ("error", "bad_message")
        assert words in answer["message"]
        assert conn.closed.wait(10)
        assert conn.close_code == 1008
        # The agent lives on, keeps its rules, and comes back at the same revision.
        conn = scripted.next_connection()
        assert conn.next() == {"v": 1, "type": "hello", "name": "gw1", "agent_version": __version__,
                               "revision": 1, "digest": digest([A, B]), "holds": HOLDS, **SPEAKS}
        assert kernel_elements(gwns) == sorted([A, B])
        assert words in agent.log_since_start()
    assert agent.alive()

    # Still following the server afterwards.
    conn.send(delta(1, 2, add=[C]))
    assert conn.next() == ack(2, [A, B, C])
    assert sample(scrape(gwns), "og_gateway_bad_frames_total") == len(BAD_FRAMES)


def test_internal_addresses_from_the_server_are_skipped_and_counted(gwns, scripted, start_agent):
    agent = start_agent()
    conn = scripted.next_connection()
    conn.next()
    for frame in snapshot(1, [A, "10.1.2.3/32"]):
        conn.send(frame)
    # The ack reports what the kernel really holds: the internal address is not in it.
    assert conn.next() == ack(1, [A])
    assert kernel_elements(gwns) == [A]
    assert "10.1.2.3/32" in agent.log_since_start()

    conn.send(delta(1, 2, add=["192.168.7.0/24 443/tcp", D]))
    assert conn.next() == ack(2, [A, D])
    assert kernel_elements(gwns) == sorted([A, D])

    metrics = scrape(gwns)
    assert sample(metrics, "og_gateway_skipped_elements_total", reason="internal") == 2
    assert sample(metrics, "og_gateway_allowed_elements") == 2
    assert sample(metrics, "og_gateway_applied_revision") == 2


def test_the_hello_states_what_the_gateway_holds_and_the_acks_digest_is_that_filter_of_the_set(
        gwns, scripted, start_agent):
    """The server computes Holding.digest from the hello's holds; the agent's kernel must give the same."""
    start_agent(extra=["--internal-network", "198.51.100.0/28", "--internal-network", "fd00::/8"])
    conn = scripted.next_connection()
    hello = conn.next()
    assert hello["holds"] == {"families": [4], "internal_networks": ["198.51.100.0/28", "fd00::/8"]}
    holding = Holding.from_wire(hello["holds"])
    published = [A, C, P, "2001:db8::1/128", "2001:db8::/64 443/tcp", "198.51.100.0/24"]
    for frame in snapshot(1, published):
        conn.send(frame)
    assert conn.next() == {"v": 1, "type": "ack", "revision": 1, "digest": holding.digest(published), "count": 2}
    assert kernel_elements(gwns) == sorted([C, P])
    assert holding.skipped(published) == {A: "internal", "198.51.100.0/24": "internal",
                                          "2001:db8::1/128": "family_disabled",
                                          "2001:db8::/64 443/tcp": "family_disabled"}
    conn.send(delta(1, 2, add=["2001:db8::2/128", D, "198.51.100.99/32"], remove=[C]))
    assert conn.next() == {"v": 1, "type": "ack", "revision": 2, "count": 3,
                           "digest": holding.digest([A, P, D, "2001:db8::1/128", "2001:db8::/64 443/tcp",
                                                     "198.51.100.0/24", "2001:db8::2/128", "198.51.100.99/32"])}
    assert kernel_elements(gwns) == sorted([P, D, "198.51.100.99/32"])


@pytest.mark.parametrize("connected", [True, False], ids=["connected", "server-unreachable"])
def test_sigterm_exits_0_and_leaves_the_rules_in_place(gwns, scripted, start_agent, tmp_path, connected):
    if connected:
        agent = start_agent()
        conn = connect_and_snapshot(scripted, 1, [A, P])
    else:
        # Nobody listens on port 1: the agent restores its state and keeps retrying.
        state_dir = tmp_path / "agent" / "state"
        state_dir.mkdir(parents=True)
        (state_dir / "state.json").write_text(json.dumps({"revision": 1, "elements": [A, P]}))
        agent = start_agent(servers=["ws://127.0.0.1:1/ws/gateway"])
        agent.wait_log("reconnecting in")
    rules = forward_rules(gwns)
    assert len(rules) >= 8

    assert agent.terminate() == 0
    assert "stopped at revision 1; the rules stay in place" in agent.log_since_start()
    assert kernel_elements(gwns) == sorted([A, P])
    assert forward_rules(gwns) == rules
    if connected:
        assert conn.closed.wait(5)


def test_drift_is_repaired_connected_or_not(gwns, scripted, start_agent):
    agent = start_agent(extra=["--drift-interval", "0.3"])
    conn = connect_and_snapshot(scripted, 1, [A, B])
    rules = forward_rules(gwns)
    assert http_status(gwns, "http://127.0.0.1:9900/healthz") == "200"

    gwns.run(["ipset", "flush", "og-allow4"])
    wait_until(lambda: kernel_elements(gwns) == sorted([A, B]), timeout=10, what="sets repaired")
    gwns.run(["iptables", "-D", "FORWARD", "-j", "OG-FORWARD"])
    wait_until(lambda: forward_rules(gwns) == rules, timeout=10, what="jump to OG-FORWARD repaired")

    # Disconnected (fail-static), the agent still repairs what others break.
    scripted.close()
    assert conn.closed.wait(10)
    gwns.run(["ipset", "flush", "og-allow4"])
    wait_until(lambda: kernel_elements(gwns) == sorted([A, B]), timeout=10, what="sets repaired offline")
    assert sample(scrape(gwns), "og_gateway_drift_repairs_total") == 3
    assert sample(scrape(gwns), "og_gateway_connected") == 0
    assert agent.alive()


def test_an_unreachable_server_url_is_skipped_for_the_next_one(gwns, scripted, start_agent):
    agent = start_agent(servers=["ws://127.0.0.1:1/ws/gateway", scripted.url])
    conn = scripted.next_connection()
    assert conn.next()["type"] == "hello"
    log = agent.log_since_start()
    assert "connection to ws://127.0.0.1:1/ws/gateway failed: ConnectionRefusedError" in log
    assert "connected to %s at revision 0" % scripted.url in log


def test_a_close_frame_from_the_server_moves_the_agent_to_the_next_server_within_a_second(gwns, scripted,
                                                                                          start_agent):
    other = ScriptedServer(gwns.name)
    try:
        agent = start_agent(servers=[scripted.url, other.url])
        conn = connect_and_snapshot(scripted, 1, [A])
        conn.close(1001, "server stopping; reconnect")
        assert conn.close_code == 1000            # the agent answered the close frame
        moved = other.next_connection(timeout=10)
        assert moved.next() == {"v": 1, "type": "hello", "name": "gw1", "agent_version": __version__,
                                "revision": 1, "digest": digest([A]), "holds": HOLDS, **SPEAKS}
        log = agent.log_since_start()
        assert "server %s closed the connection: 1001 server stopping; reconnect" % scripted.url in log
        delay = re.search(r"closed the connection: 1001 .*\n.* reconnecting in ([\d.]+)s to (\S+);", log)
        assert (float(delay.group(1)) <= 1.0, delay.group(2)) == (True, other.url)
        assert "connection to %s lost" % scripted.url not in log
        assert kernel_elements(gwns) == [A]       # the rules stayed meanwhile
    finally:
        other.close()


def test_a_delta_tests_only_its_members_and_the_drift_check_finds_a_member_removed_by_hand(
        gwns, scripted, start_agent):
    # The first drift check comes 8 s after the start: well after the delta below.
    agent = start_agent(extra=["--drift-interval", "8"])
    conn = connect_and_snapshot(scripted, 1, [A, B])
    gwns.run(["ipset", "del", "og-allow4", "198.51.100.10"])  # A, by hand, behind the agent's back
    # The delta's verify tests D's members only: its ack claims the applied set, without reading all of it back.
    conn.send(delta(1, 2, add=[D]))
    assert conn.next() == ack(2, [A, B, D])
    log = agent.log_since_start()
    assert "applied delta 1->2 add=1 remove=0 elements=3" in log
    assert "not proven by testing its members" not in log
    assert "drifted" not in log
    # The next drift check reads the whole set back and puts A back.
    wait_until(lambda: kernel_elements(gwns) == sorted([A, B, D]), timeout=30, what="A repaired by the drift check")
    agent.wait_log("allowed sets drifted (kernel 2, expected 3 elements): re-applied revision 2")
    assert sample(scrape(gwns), "og_gateway_drift_repairs_total") == 1

    # A removed host that a network in the set (B, 198.51.100.64/26) still covers cannot be proven gone by
    # `ipset test`: that delta reads the whole set back instead, and its ack is what the kernel holds.
    host = "198.51.100.70/32"
    conn.send(delta(2, 3, add=[host]))
    assert conn.next() == ack(3, [A, B, D, host])
    conn.send(delta(3, 4, remove=[host]))
    assert conn.next() == ack(4, [A, B, D])
    agent.wait_log("delta to revision 4 not proven by testing its members: reading the whole set back")
    assert "delta to revision 3 not proven" not in agent.log_since_start()
    assert kernel_elements(gwns) == sorted([A, B, D])
    assert sample(scrape(gwns), "og_gateway_drift_repairs_total") == 1
    assert agent.alive()


# ---- the agent's client talking to og_protocol's builders and parsers (the server's side of the contract) ---
def typed(conn):
    """The agent's next frame, parsed by og_protocol as the server parses it."""
    return og_protocol.parse_agent_frame(json.dumps(conn.next()))


def test_the_agent_follows_frames_built_by_og_protocol_and_answers_frames_it_parses(gwns, scripted, start_agent):
    start_agent()
    conn = scripted.next_connection()
    assert typed(conn) == og_protocol.Hello("gw1", __version__, 0, digest([]),
                                            Holding([4], DEFAULT_INTERNAL_NETWORKS),
                                            ("domains", "differs", "mode", "blocked", "clients"),
                                            "enforce")
    for frame in og_protocol.snapshot(5, [A, B, C, P], {A: ["api.partner.example"]}):
        conn.send(frame)
    assert typed(conn) == og_protocol.Ack(5, digest([A, B, C, P]), 4)
    conn.send(og_protocol.delta(5, 6, add=[D], remove=[A, C], aged=[C], names={D: ["d.example"]}))
    assert typed(conn) == og_protocol.Ack(6, digest([B, P, D]), 3)
    assert kernel_elements(gwns) == sorted([B, P, D])
    conn.send(og_protocol.heartbeat(1.0))
    conn.send(og_protocol.delta(6, 6, add=[], remove=[]))
    assert typed(conn) == og_protocol.Ack(6, digest([B, P, D]), 3)


def test_a_frame_of_another_protocol_version_is_refused_with_bad_version_and_closed_1008(gwns, scripted,
                                                                                         start_agent):
    agent = start_agent()
    conn = connect_and_snapshot(scripted, 1, [A, B])
    newer = json.loads(og_protocol.delta(1, 2, add=[C], remove=[]))
    conn.send(json.dumps(dict(newer, v=og_protocol.VERSION + 1)))
    message = "protocol version 2 is not supported; this agent speaks v1"
    assert typed(conn) == og_protocol.Error(og_protocol.BAD_VERSION, message)
    assert conn.closed.wait(10)
    assert (conn.close_code, conn.close_reason) == (og_protocol.CLOSE_POLICY, message)
    assert "bad frame from %s: %s; closing (1008) and reconnecting, rules stay at revision 1" % (
        scripted.url, message) in agent.log_since_start()
    assert kernel_elements(gwns) == sorted([A, B])       # nothing of the frame applied

    # A server that refuses the agent's version says so in an error frame and closes (1008): logged, rules stay.
    conn = scripted.next_connection()
    assert typed(conn) == og_protocol.Hello("gw1", __version__, 1, digest([A, B]),
                                            Holding([4], DEFAULT_INTERNAL_NETWORKS),
                                            ("domains", "differs", "mode", "blocked", "clients"),
                                            "enforce")
    refusal = "protocol version 1 is not supported; this server speaks v2"
    conn.send(og_protocol.error(og_protocol.BAD_VERSION, refusal))
    conn.close(og_protocol.CLOSE_POLICY, refusal[:120])
    agent.wait_log("server refused us: bad_version: " + refusal)
    agent.wait_log("server %s closed the connection: 1008 %s" % (scripted.url, refusal))
    assert kernel_elements(gwns) == sorted([A, B])
    assert agent.alive()
