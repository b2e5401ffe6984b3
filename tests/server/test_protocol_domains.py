"""The domains frame (docs/protocol.md, "Features") against a real server process with scripted gateways: an
agent announcing "domains" gets every domain entry after its snapshot and again whenever they change; an agent
that does not (one from before it) never gets one and its session goes on as before."""

import pytest
import websocket

from og_kernel import og_protocol
from og_kernel.og_elements import digest as digest_of
from tests.support.nslib import wait_until
from tests.support.serverlib import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The resolver off: domain entries stay without addresses, and nothing here asks a DNS server.
    srv = Server(str(tmp_path_factory.mktemp("server")), resolver_enabled=False)
    yield srv
    srv.stop()


def connect(server):
    return websocket.create_connection(server.ws_url, timeout=10, header=["Authorization: Bearer " + server.gateway])


def next_frame(ws):
    while True:
        frame = og_protocol.parse_server_frame(ws.recv())
        if not isinstance(frame, og_protocol.Heartbeat):
            return frame


def snapshot(ws):
    chunks = [next_frame(ws)]
    while len(chunks) < chunks[0].chunks:
        chunks.append(next_frame(ws))
    assert all(isinstance(c, og_protocol.Snapshot) for c in chunks), chunks
    return chunks[0].revision, sorted(e.text for c in chunks for e in c.elements), chunks[0].features


def names(frame):
    assert isinstance(frame, og_protocol.Domains), frame
    return [(d.name, d.ports) for d in frame.domains]


def test_an_agent_announcing_domains_gets_them_after_the_snapshot_and_whenever_they_change(server):
    first = server.add("before.example", ports=["443/tcp"])
    ws = connect(server)
    ws.send(og_protocol.hello("gw-dom", "test", 0, None, features=[og_protocol.FEATURE_DOMAINS]))
    revision, held, features = snapshot(ws)
    assert features == (og_protocol.FEATURE_DOMAINS, og_protocol.FEATURE_LEARNED, og_protocol.FEATURE_DIFFERS,
                        og_protocol.FEATURE_BLOCKED, og_protocol.FEATURE_CLIENTS)
    frame = next_frame(ws)
    assert names(frame) == [("before.example", ("443/tcp",))]
    assert frame.domains[0].entry == first["id"] and frame.revision == revision
    ws.send(og_protocol.ack(revision, digest_of(held), len(held)))

    # A domain entry without addresses takes no revision; its domains frame comes all the same.
    second = server.add("later.example")
    assert names(next_frame(ws)) == [("before.example", ("443/tcp",)), ("later.example", ())]

    # An address entry: a delta, and no domains frame (the domain entries did not change): the next frame after
    # the delta is the one the following domain change causes.
    server.add("198.51.100.61")
    delta = next_frame(ws)
    assert isinstance(delta, og_protocol.Delta) and [e.text for e in delta.add] == ["198.51.100.61/32"]
    ws.send(og_protocol.ack(delta.revision, digest_of(sorted(set(held) | {"198.51.100.61/32"})), len(held) + 1))
    server.remove(first)
    assert names(next_frame(ws)) == [("later.example", ())]
    server.remove(second)
    assert names(next_frame(ws)) == []
    ws.close()


def test_an_agent_without_features_never_gets_a_domains_frame_and_its_session_goes_on(server):
    ws = connect(server)
    ws.send(og_protocol.hello("gw-old", "old", 0, None))
    revision, held, _features = snapshot(ws)
    ws.send(og_protocol.ack(revision, digest_of(held), len(held)))
    domain = server.add("old-agent.example")
    address = server.add("198.51.100.62")
    # The next frame is the address's delta: no domains frame came before it.
    frame = next_frame(ws)
    assert isinstance(frame, og_protocol.Delta) and [e.text for e in frame.add] == ["198.51.100.62/32"], frame
    held = sorted(set(held) | {"198.51.100.62/32"})
    ws.send(og_protocol.ack(frame.revision, digest_of(held), len(held)))
    wait_until(lambda: server.gateways()["gw-old"]["applied_revision"] == frame.revision, timeout=10,
               what="the old agent's ack recorded")
    assert server.gateways()["gw-old"]["connected"]
    server.remove(domain)
    server.remove(address)
    frame = next_frame(ws)
    assert isinstance(frame, og_protocol.Delta), frame
    ws.close()
