"""The gateway protocol against a real server process (gunicorn on loopback) with scripted gateways.

A scripted gateway keeps its element set in memory and applies snapshots and deltas exactly as
docs/protocol.md says; the tests check that reconnects converge to the server's set (same digest), and that
broken, out-of-order and oversized frames are refused without disturbing other gateways."""

import json
import time

import pytest
import requests
import websocket

from nslib import wait_until
from og_kernel.og_elements import digest as digest_of
from serverlib import Gateway, Server, converged


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
    assert gw.last["names"] == {"198.51.100.40/32 80/tcp": ["198.51.100.40 (443/tcp, 80/tcp)",
                                                             "198.51.100.40 (80/tcp)"],
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
        for _ in range(3):
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
    text = wait_until(lambda: (lambda t: t if "og_server_publish_latency_seconds_count 0.0" not in t else None)(
        requests.get(server.url + "/metrics", timeout=5).text), timeout=10, what="a publish latency sample")
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
