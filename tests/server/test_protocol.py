"""The gateway protocol against a real server process (gunicorn on loopback) with scripted gateways.

A scripted gateway keeps its element set in memory and applies snapshots and deltas exactly as
docs/protocol.md says; the tests check that reconnects converge to the server's set (same digest), and that
broken, out-of-order and oversized frames are refused without disturbing other gateways."""

import json
import time

import pytest
import requests
import websocket

from og_kernel import og_protocol
from og_kernel.og_elements import Element, Holding, digest as digest_of
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS
from tests.support.nslib import wait_until
from tests.support.serverlib import Gateway, Server, converged, snapshots_sent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("server")))
    yield srv
    srv.stop()


def test_snapshot_then_live_deltas_and_acks_are_recorded(server):
    a = server.add("198.51.100.10")
    gw = Gateway(server, "gw-live")
    gw.hello()
    assert gw.apply_next() == "snapshot"
    assert "198.51.100.10/32" in gw.elements
    assert gw.last["names"]["198.51.100.10/32"] == ["198.51.100.10"]
    b = server.add("203.0.113.0/24", ports=["443/tcp"])
    assert gw.apply_next() == "delta"
    assert "203.0.113.0/24 443/tcp" in gw.elements
    assert gw.last["names"] == {"203.0.113.0/24 443/tcp": ["203.0.113.0/24 (443/tcp)"]}
    wait_until(lambda: converged(server, gw), timeout=10, what="gateway recorded at the head with its digest")
    state = server.gateways()["gw-live"]
    assert state["connected"] and state["agent_version"] == "test" and state["elements"] == len(gw.elements)
    server.remove(a)
    server.remove(b)
    # Two revisions: one delta each, or one delta covering both when the session wakes after the second.
    assert gw.apply_next() == "delta"
    if gw.elements:
        assert gw.apply_next() == "delta"
    assert gw.elements == set()
    gw.close()
    wait_until(lambda: not server.gateways()["gw-live"]["connected"], timeout=10, what="disconnect recorded")


def test_a_second_entry_on_a_published_element_sends_its_names_without_changing_the_set(server):
    first = server.add("198.51.100.40", ports=["80/tcp"])
    gw = Gateway(server, "gw-names")
    gw.hello()
    assert gw.apply_next() == "snapshot"
    before = set(gw.elements)
    second = server.add("198.51.100.40", ports=["80/tcp", "443/tcp"])
    # 198.51.100.40/32 80/tcp was published already: the delta adds only the new port, and names both entries.
    assert gw.apply_next() == "delta"
    assert (gw.last["add"], gw.last["remove"]) == (["198.51.100.40/32 443/tcp"], [])
    assert gw.last["names"] == {
        "198.51.100.40/32 80/tcp": ["198.51.100.40 (443/tcp, 80/tcp)", "198.51.100.40 (80/tcp)"],
        "198.51.100.40/32 443/tcp": ["198.51.100.40 (443/tcp, 80/tcp)"]}
    server.remove(first)
    # The set loses nothing (the second entry still produces port 80); the names say who is left.
    assert gw.apply_next() == "delta"
    assert (gw.last["add"], gw.last["remove"], gw.last["names"]) == (
        [], [], {"198.51.100.40/32 80/tcp": ["198.51.100.40 (443/tcp, 80/tcp)"]})
    wait_until(lambda: converged(server, gw), timeout=10, what="gateway at the head with its digest")
    assert gw.elements == before | {"198.51.100.40/32 443/tcp"}
    server.remove(second)
    gw.close()


def test_a_reconnect_gets_exactly_what_it_missed_including_deletions(server):
    keep = server.add("198.51.100.21")
    gone = server.add("198.51.100.22")
    gw = Gateway(server, "gw-missed")
    gw.hello()
    gw.apply_next()
    gw.close()
    # While it is away: one add, one delete, one add-then-delete.
    server.remove(gone)
    new = server.add("198.51.100.23")
    flash = server.add("198.51.100.24")
    server.remove(flash)
    back = Gateway(server, "gw-missed", revision=gw.revision, elements=gw.elements)
    back.hello()
    assert back.apply_next() == "delta"
    assert "198.51.100.21/32" in back.elements and "198.51.100.23/32" in back.elements
    assert "198.51.100.22/32" not in back.elements and "198.51.100.24/32" not in back.elements
    wait_until(lambda: converged(server, back), timeout=10, what="converged after reconnect")
    back.close()
    server.remove(keep)
    server.remove(new)


def test_a_gateway_whose_set_drifted_gets_a_snapshot_instead_of_a_delta(server):
    server.add("198.51.100.31")
    gw = Gateway(server, "gw-drift")
    gw.hello()
    gw.apply_next()
    gw.close()
    server.add("198.51.100.32")
    # Same revision, different content (someone flushed its set): the server must not build on it.
    back = Gateway(server, "gw-drift", revision=gw.revision, elements=set())
    back.hello()
    assert back.apply_next() == "snapshot"
    wait_until(lambda: converged(server, back), timeout=10, what="converged after drift")
    back.close()


def test_a_wrong_digest_in_an_ack_at_head_triggers_one_snapshot_not_a_loop(server):
    gw = Gateway(server, "gw-badack")
    gw.hello()
    gw.apply_next()
    gw.send(type="ack", revision=gw.revision, digest="0" * 64, count=0)
    assert gw.recv()["type"] == "snapshot"
    # Still different after the snapshot (say, the gateway skips an element): no second snapshot.
    gw.send(type="ack", revision=gw.revision, digest="0" * 64, count=0)
    gw.ws.settimeout(2)
    with pytest.raises(websocket.WebSocketTimeoutException):
        gw.recv()
    assert server.gateways()["gw-badack"]["digest_match"] is False
    gw.close()


def test_large_snapshots_come_in_chunks(server):
    items = [{"target": "11.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)} for i in range(12000)]
    result = server.api("POST", "/api/v1/entries/import", json={"entries": items}).json()
    assert len(result["created"]) == 12000
    gw = Gateway(server, "gw-chunks")
    gw.hello()
    assert gw.apply_next() == "snapshot"
    assert gw.last_chunks == 2 and len(gw.elements) >= 12000
    wait_until(lambda: converged(server, gw), timeout=20, what="converged after a chunked snapshot")
    gw.close()


def closed(gw):
    """True when the server ends the connection: recv raises, or returns the empty data of a close frame."""
    try:
        for dummy in range(3):
            if gw.ws.recv() in ("", b""):
                return True
    except (websocket.WebSocketException, ConnectionError, OSError):
        return True
    return False


@pytest.mark.parametrize("frame, code", [
    ("not json", "bad_message"),
    ('["a list"]', "bad_message"),
    ('{"v": 2, "type": "hello", "name": "x", "revision": 0}', "bad_version"),
    ('{"v": 1, "type": "launch"}', "bad_message"),
    ('{"v": 1, "type": "ack", "revision": 1, "digest": "00", "count": 0}', "bad_message"),
    ('{"v": 1, "type": "hello", "name": "", "revision": 0}', "bad_message"),
    ('{"v": 1, "type": "hello", "name": "x", "revision": -1}', "bad_message"),
])
def test_malformed_or_out_of_order_frames_are_refused_without_disturbing_others(server, frame, code):
    other = Gateway(server, "gw-bystander")
    other.hello()
    other.apply_next()
    bad = Gateway(server, "gw-bad")
    bad.ws.send(frame)
    answer = json.loads(bad.ws.recv())
    assert answer["type"] == "error" and answer["code"] == code
    assert closed(bad)
    # The bystander still gets live changes.
    entry = server.add("198.51.100.77")
    assert other.apply_next() == "delta" and "198.51.100.77/32" in other.elements
    server.remove(entry)
    assert other.apply_next() == "delta"
    other.close()


def test_an_ack_for_a_revision_never_sent_is_refused(server):
    gw = Gateway(server, "gw-future")
    gw.hello()
    gw.apply_next()
    gw.send(type="ack", revision=gw.revision + 100, digest="0" * 64, count=0)
    answer = gw.recv()
    assert answer["type"] == "error" and "never sent" in answer["message"]


def test_an_oversized_frame_closes_only_that_connection(server):
    other = Gateway(server, "gw-bystander2")
    other.hello()
    other.apply_next()
    big = Gateway(server, "gw-big")
    big.send(type="hello", name="gw-big", revision=0, agent_version="x" * (2 << 20))
    assert closed(big)
    entry = server.add("198.51.100.78")
    assert other.apply_next() == "delta"
    server.remove(entry)
    other.close()


@pytest.mark.parametrize("which", ["none", "wrong", "viewer", "admin"])
def test_only_gateway_tokens_may_connect(server, which):
    token = {"none": None, "wrong": "x" * 40, "viewer": server.viewer, "admin": server.admin}[which]
    header = ["Authorization: Bearer " + token] if token else []
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection("ws://127.0.0.1:%d/ws/gateway" % server.port, timeout=10, header=header)
    assert caught.value.status_code == 401


def test_a_gateway_token_cannot_use_the_api(server):
    response = requests.get(server.url + "/api/v1/entries", headers={"Authorization": "Bearer " + server.gateway})
    assert response.status_code == 403


def test_server_metrics_count_connected_gateways_and_publish_latency(server):
    gw = Gateway(server, "gw-metrics")
    gw.hello()
    gw.apply_next()
    entry = server.add("198.51.100.79")
    gw.apply_next()

    def sampled():
        text = requests.get(server.url + "/metrics", timeout=5).text
        return text if "og_server_publish_latency_seconds_count 0.0" not in text else None
    text = wait_until(sampled, timeout=10, what="a publish latency sample")
    assert "og_server_gateways_connected" in text
    server.remove(entry)
    gw.close()


def test_a_replayed_older_ack_does_not_move_the_gateway_backwards(server):
    gw = Gateway(server, "gw-replay")
    gw.hello()
    gw.apply_next()
    first = dict(revision=gw.revision, digest=digest_of(gw.elements), count=len(gw.elements))
    entry = server.add("198.51.100.88")
    gw.apply_next()
    wait_until(lambda: converged(server, gw), timeout=10, what="converged")
    gw.send(type="ack", **first)          # an old frame replayed
    gw.send(type="heartbeat", ts=0)
    time.sleep(1)
    state = server.gateways()["gw-replay"]
    assert state["applied_revision"] == gw.revision and state["digest_match"]
    server.remove(entry)
    gw.close()


IPV4_ONLY = Holding([4], DEFAULT_INTERNAL_NETWORKS)


def gaps(body, prefix):
    """The not-enforced list of every element of an entry, only for the gateways named with prefix."""
    return {e["element"]: [g for g in e["not_enforced"] if g["gateway"].startswith(prefix)] for e in body["elements"]}


def test_an_ipv6_entry_on_an_ipv4_only_gateway_costs_deltas_not_snapshots(server):
    v6 = server.add("2001:db8::1")
    v4 = server.add("198.51.100.101")
    gw = Gateway(server, "gw-h4", holding=IPV4_ONLY)
    gw.hello()
    assert gw.apply_next() == "snapshot"
    assert "2001:db8::1/128" not in gw.elements and "198.51.100.101/32" in gw.elements
    wait_until(lambda: converged(server, gw), timeout=10, what="in sync without the IPv6 element")
    added = []
    for i in range(5):
        added.append(server.add("198.51.100.%d" % (110 + i)))
        assert gw.apply_next() == "delta"
    added.append(server.add("2001:db8::2"))
    assert gw.apply_next() == "delta"
    wait_until(lambda: converged(server, gw), timeout=10, what="in sync after the changes")
    assert snapshots_sent(server, "gw-h4") == {"first": 1}
    state = server.gateways()["gw-h4"]
    assert state["in_sync"] is True and state["families"] == [4]
    assert state["status"] == "in sync; not enforced: 2 skipped: no IPv6"
    assert state["not_enforced"] == {"count": 2, "reasons": ["IPv6 off"], "elements": [
        {"element": "2001:db8::1/128", "reason": "family_disabled", "message": "IPv6 is off on this gateway"},
        {"element": "2001:db8::2/128", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}]}
    body = server.api("GET", "/api/v1/entries/%d" % v6["id"]).json()
    assert gaps(body, "gw-h") == {"2001:db8::1/128": [
        {"gateway": "gw-h4", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}]}
    assert gaps(server.api("GET", "/api/v1/entries/%d" % v4["id"]).json(), "gw-h") == {"198.51.100.101/32": []}
    why = server.api("GET", "/api/v1/addresses/2001:db8::1").json()
    assert [[g for g in i["not_enforced"] if g["gateway"].startswith("gw-h")] for i in why["entries"]] == [
        [{"gateway": "gw-h4", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}]]
    # A reconnect at the same revision with the digest of what it holds: an empty delta, still no snapshot.
    gw.close()
    back = Gateway(server, "gw-h4", revision=gw.revision, elements=gw.elements, holding=IPV4_ONLY)
    back.hello()
    assert back.apply_next() == "delta" and back.last["add"] == [] and back.last["remove"] == []
    assert snapshots_sent(server, "gw-h4") == {"first": 1}
    back.close()
    for entry in [v6, v4] + added:
        server.remove(entry)


def test_an_old_agent_without_holds_is_compared_with_everything_as_before(server):
    v6 = server.add("2001:db8::10")
    old = Gateway(server, "gw-old")          # holds everything it is sent, says nothing of what it holds
    old.hello()
    assert old.apply_next() == "snapshot"
    wait_until(lambda: converged(server, old), timeout=10, what="old agent in sync")
    entry = server.add("198.51.100.120")
    assert old.apply_next() == "delta"
    wait_until(lambda: converged(server, old), timeout=10, what="old agent in sync after a delta")
    state = server.gateways()["gw-old"]
    assert (state["families"], state["not_enforced"], state["status"]) == (None, None, "in sync")
    assert snapshots_sent(server, "gw-old") == {"first": 1}
    # An old agent that skips an element (IPv6 off) differs, as before: one snapshot, then no loop.
    skipping = Gateway(server, "gw-old-v4")
    skipping.hello()
    skipping.apply_next()
    skipping.elements.discard("2001:db8::10/128")
    skipping.send(type="ack", revision=skipping.revision, digest=digest_of(skipping.elements),
                  count=len(skipping.elements))
    assert skipping.recv()["type"] == "snapshot"
    wait_until(lambda: snapshots_sent(server, "gw-old-v4") == {"first": 1, "ack_mismatch": 1}, timeout=10,
               what="the mismatch snapshot counted")
    old.close()
    skipping.close()
    server.remove(entry)
    server.remove(v6)


def test_a_gateway_whose_own_internal_networks_refuse_an_element_is_in_sync_and_says_so(server):
    holding = Holding([4, 6], list(DEFAULT_INTERNAL_NETWORKS) + ["198.51.100.128/25"])
    inside = server.add("198.51.100.130", ports=["443/tcp"])
    outside = server.add("198.51.100.10")
    gw = Gateway(server, "gw-hint", holding=holding)
    gw.hello()
    assert gw.apply_next() == "snapshot"
    assert "198.51.100.130/32 443/tcp" not in gw.elements and "198.51.100.10/32" in gw.elements
    more = server.add("198.51.100.131")
    assert gw.apply_next() == "delta"
    wait_until(lambda: converged(server, gw), timeout=10, what="in sync without its internal elements")
    state = server.gateways()["gw-hint"]
    assert state["status"] == "in sync; not enforced: 2 refused by its own policy (internal networks)"
    assert [e["element"] for e in state["not_enforced"]["elements"]] == ["198.51.100.130/32 443/tcp",
                                                                         "198.51.100.131/32"]
    assert gaps(server.api("GET", "/api/v1/entries/%d" % inside["id"]).json(), "gw-hint") == {
        "198.51.100.130/32 443/tcp": [{"gateway": "gw-hint", "reason": "internal",
                                       "message": "inside this gateway's internal networks"}]}
    assert snapshots_sent(server, "gw-hint") == {"first": 1}
    # What it holds really differs (its set was flushed): that is a mismatch, and a snapshot fixes it.
    gw.send(type="ack", revision=gw.revision, digest=digest_of(set()), count=0)
    assert gw.recv()["type"] == "snapshot"
    wait_until(lambda: not server.gateways()["gw-hint"]["in_sync"], timeout=10, what="the mismatch recorded")
    assert server.gateways()["gw-hint"]["status"].startswith("differs: ")
    # An agent with FEATURE_DIFFERS names what its kernel lacks: the fleet says so instead of a bare "differs".
    gw.send(type="ack", revision=gw.revision, digest=digest_of(set()), count=0, differs={
        "missing": ["198.51.100.10/32"], "extra": [], "missing_count": 1, "extra_count": 0})
    wait_until(lambda: server.gateways()["gw-hint"]["status"] == "differs at revision %d: 1 missing from its "
               "kernel" % gw.revision, timeout=10, what="the named difference recorded")
    missing = [d for d in server.gateways()["gw-hint"]["differences"] if d["kind"] == "missing"]
    assert missing == [{"kind": "missing", "reason": "kernel", "label": "missing from its kernel", "count": 1,
                        "elements": [{"element": "198.51.100.10/32",
                                      "message": "applied by its agent, but not in the kernel's sets"}]}]
    gw.close()
    for entry in (inside, outside, more):
        server.remove(entry)


@pytest.mark.parametrize("holds, message", [
    ({"families": [5], "internal_networks": []}, "hello holds families [5] must be a non-empty list of 4 and/or 6"),
    ({"families": [4], "internal_networks": ["nope"]}, "hello internal network 'nope' is not an IPv4/IPv6 network"),
])
def test_a_bad_holds_in_hello_is_refused(server, holds, message):
    gw = Gateway(server, "gw-badholds")
    gw.send(type="hello", name="gw-badholds", agent_version="test", revision=0, holds=holds)
    msg = gw.recv()
    assert (msg["type"], msg["code"]) == ("error", "bad_message") and msg["message"].startswith(message)
    gw.close()


# ---- the server's handler talking to og_protocol's builders and parsers (the agent's side of the contract) ---
def typed_connection(server):
    return websocket.create_connection(server.ws_url, timeout=10, header=["Authorization: Bearer " + server.gateway])


def next_typed(ws):
    """The next frame from the server, parsed by og_protocol as the agent parses it (heartbeats skipped)."""
    while True:
        frame = og_protocol.parse_server_frame(ws.recv())
        if not isinstance(frame, og_protocol.Heartbeat):
            return frame


def typed_snapshot(ws):
    """Every chunk of the next snapshot, each parsed by og_protocol (earlier tests leave more than one chunk)."""
    chunks = [next_typed(ws)]
    while len(chunks) < chunks[0].chunks:
        chunks.append(next_typed(ws))
    assert [(type(c), c.revision, c.chunk, c.chunks) for c in chunks] == [
        (og_protocol.Snapshot, chunks[0].revision, i, len(chunks)) for i in range(len(chunks))]
    return chunks


def close_frame(ws):
    """(code, reason) of the server's close frame."""
    opcode, data = ws.recv_data(control_frame=True)
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, data = ws.recv_data(control_frame=True)
    return int.from_bytes(data[:2], "big"), data[2:].decode()


def test_a_gateway_built_on_og_protocol_gets_typed_snapshots_and_deltas(server):
    entry = server.add("198.51.100.91")
    ws = typed_connection(server)
    ws.send(og_protocol.hello("gw-typed", "typed", 0, None, Holding([4], DEFAULT_INTERNAL_NETWORKS)))
    chunks = typed_snapshot(ws)
    revision = chunks[0].revision
    held = sorted(e.text for c in chunks for e in c.elements)
    assert "198.51.100.91/32" in held
    assert [c.names["198.51.100.91/32"] for c in chunks if "198.51.100.91/32" in c.names] == [["198.51.100.91"]]
    ws.send(og_protocol.ack(revision, digest_of(held), len(held)))
    wait_until(lambda: server.gateways()["gw-typed"]["applied_revision"] == revision, timeout=10,
               what="the typed gateway's ack recorded")
    server.remove(entry)
    assert next_typed(ws) == og_protocol.Delta(revision, revision + 1, (), (Element.parse("198.51.100.91/32"),),
                                               (), {}, (og_protocol.FEATURE_DOMAINS, og_protocol.FEATURE_LEARNED,
                                                        og_protocol.FEATURE_DIFFERS, og_protocol.FEATURE_BLOCKED,
                                                        og_protocol.FEATURE_CLIENTS))
    ws.close()


def test_a_hello_of_another_protocol_version_is_refused_with_bad_version_and_closed_1008(server):
    ws = typed_connection(server)
    hello = json.loads(og_protocol.hello("gw-v2", "9.0", 0, None))
    ws.send(json.dumps(dict(hello, v=og_protocol.VERSION + 1)))
    message = "protocol version 2 is not supported; this server speaks v1"
    assert next_typed(ws) == og_protocol.Error(og_protocol.BAD_VERSION, message)
    assert close_frame(ws) == (og_protocol.CLOSE_POLICY, message)
    wait_until(lambda: "protocol error bad_version: " + message in server.log_text(), timeout=10,
               what="the refusal in the server's log")
    assert "gw-v2" not in server.gateways()


def test_an_error_frame_from_the_agent_is_logged_and_the_session_goes_on_until_it_closes(server):
    ws = typed_connection(server)
    ws.send(og_protocol.hello("gw-refuses", "typed", 0, None))
    typed_snapshot(ws)
    ws.send(og_protocol.error(og_protocol.BAD_VERSION, "protocol version 2 is not supported; this agent speaks v1"))
    wait_until(lambda: "gateway gw-refuses refused a frame: bad_version: protocol version 2 is not supported; "
                       "this agent speaks v1" in server.log_text(), timeout=10, what="the agent's refusal logged")
    # Not answered as a protocol error: the session still streams (the agent closes it itself).
    entry = server.add("198.51.100.92")
    assert Element.parse("198.51.100.92/32") in next_typed(ws).add
    server.remove(entry)
    ws.close()


def test_clients_frames_are_announced_stored_and_a_bad_address_refused(server):
    gw = Gateway(server, "gw-clients")
    gw.hello()
    assert gw.apply_next() == "snapshot"
    assert og_protocol.FEATURE_CLIENTS in gw.last["features"]   # the agent may send clients frames
    for raw in og_protocol.clients(time.time(), [og_protocol.ClientUse("10.88.7.2", 1500, 3, 90000, 70),
                                                 og_protocol.ClientUse("10.88.7.3", 60, 1, 0, 0)]):
        gw.ws.send(raw)

    def clients():
        rows = server.api("GET", "/api/v1/traffic/clients?gateway=gw-clients").json()["clients"]
        return [(r["client"], r["out_bytes"], r["in_bytes"], r["out_packets"], r["in_packets"]) for r in rows]

    wait_until(lambda: clients() == [("10.88.7.2", 1500, 90000, 3, 70), ("10.88.7.3", 60, 0, 1, 0)], timeout=15,
               what="the clients frame stored by the hub's flush")
    gw.send(type="clients", clients=[{"client": "10.88.7.999", "out_bytes": 5}])
    answer = gw.recv()
    assert answer == {"v": 1, "type": "error", "code": "bad_message",
                      "message": "clients frame: client '10.88.7.999' is no IP address"}
    assert closed(gw)
