"""A graceful stop of og-server (SIGTERM): every gateway session gets a close frame (1001), requests in flight
are answered, and a restarted server shows its gateways disconnected until they say hello again (real og-server
processes under gunicorn on loopback; replicas on PostgreSQL)."""

import datetime as dt
import json
import socket
import sqlite3
import subprocess
import time

import pytest

from server_app import config
from server_app.models import Gateway as GatewayRow, db
from tests.support.nslib import wait_until
from tests.support.serverlib import Gateway, Server

GOING_AWAY = (1001, "server stopping; reconnect")


def connected(server):
    return {name: gw["connected"] for name, gw in server.gateways().items()}


def synced(server, *names):
    """Gateways that said hello and applied the snapshot."""
    gateways = []
    for name in names:
        gw = Gateway(server, name)
        gw.hello()
        assert gw.apply_next() == "snapshot"
        gateways.append(gw)
    return gateways


def test_sigterm_closes_every_gateway_session_with_1001_and_marks_them_disconnected(tmp_path):
    server = Server(str(tmp_path))
    gateways = synced(server, "gw1", "gw2", "gw3", "gw4")
    silent = Gateway(server, "gw5")     # connected, still to say hello
    assert connected(server) == {"gw1": True, "gw2": True, "gw3": True, "gw4": True}

    server.proc.terminate()
    assert [gw.close_frame() for gw in gateways + [silent]] == [GOING_AWAY] * 5
    assert server.stop() == 0
    log = server.log_text()
    assert log.count("server stopping, closing the session (1001)") == 5
    assert "Traceback" not in log
    # Each session recorded its end before the server exited (read from the database file itself).
    with sqlite3.connect(str(tmp_path / "og.db")) as database:
        assert database.execute("SELECT name, connected FROM gateways ORDER BY name").fetchall() == [
            ("gw1", 0), ("gw2", 0), ("gw3", 0), ("gw4", 0)]

    server.start()
    assert connected(server) == {"gw1": False, "gw2": False, "gw3": False, "gw4": False}
    server.stop()


def test_a_request_in_flight_at_sigterm_is_answered_and_committed(tmp_path):
    server = Server(str(tmp_path))
    [gw] = synced(server, "gw1")
    body = json.dumps({"target": "198.51.100.10"}).encode()
    head = ("POST /api/v1/entries HTTP/1.1\r\nHost: og\r\nAuthorization: Bearer %s\r\nContent-Type: application/json"
            "\r\nContent-Length: %d\r\n\r\n" % (server.admin, len(body))).encode()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    client.sendall(head + body[:10])      # the view is now reading the rest of the body
    wait_until(lambda: accept_queue(server.port) == 0, timeout=10, what="the request accepted by the worker")

    server.proc.terminate()
    assert gw.close_frame() == GOING_AWAY   # the worker is stopping ...
    assert server.proc.poll() is None       # ... and waits for the request
    client.sendall(body[10:])
    answer = read_response(client)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 201 CREATED"
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["target"] == "198.51.100.10"
    assert server.stop() == 0

    server.start()
    assert [e["target"] for e in server.api("GET", "/api/v1/entries").json()["items"]] == ["198.51.100.10"]
    server.stop()


def accept_queue(port):
    """Connections waiting in the listening socket's accept queue (ss shows it as Recv-Q)."""
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines())


def read_response(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_restarted_server_shows_its_gateways_disconnected_until_they_say_hello(tmp_path):
    server = Server(str(tmp_path))
    # Keep the session referenced: a collected Gateway closes its socket, and the server then rightly says so.
    [first] = synced(server, "gw1")
    wait_until(lambda: server.gateways()["gw1"]["digest_match"], timeout=10, what="ack recorded")
    assert connected(server) == {"gw1": True}

    server.crash()   # no goodbye at all: the row still says connected
    server.start()
    assert connected(server) == {"gw1": False}
    again = Gateway(server, "gw1")
    assert connected(server) == {"gw1": False}   # connected, but no hello yet
    again.hello()
    assert again.apply_next() == "snapshot"
    assert connected(server) == {"gw1": True}
    server.stop()


def test_a_restarted_replica_leaves_the_other_replicas_sessions_connected(postgres, tmp_path):
    url = postgres.create_database()
    a = Server(str(tmp_path / "a"), database_url=url)
    b = Server(str(tmp_path / "b"), database_url=url, replica_of=a)
    try:
        [on_a] = synced(a, "gw-on-a")
        [_on_b] = synced(b, "gw-on-b")   # kept referenced: a collected Gateway closes its socket
        assert connected(a) == connected(b) == {"gw-on-a": True, "gw-on-b": True}

        b.crash()
        b.start()
        # b cleared only the session it held itself; gw-on-a's heartbeat keeps its session alive.
        on_a.send(type="heartbeat", ts=time.time())
        wait_until(lambda: connected(a) == {"gw-on-a": True, "gw-on-b": False}, timeout=10,
                   what="gw-on-a's heartbeat recorded")
        assert connected(b) == {"gw-on-a": True, "gw-on-b": False}
        a.crash()
        a.start()
        assert connected(b) == {"gw-on-a": False, "gw-on-b": False}
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("silent, shown", [(5, True), (29, True), (31, False), (None, False)])
def test_the_fleet_shows_a_session_silent_for_more_than_30s_as_disconnected(app, api, silent, shown):
    # E.g. its replica was killed and never came back: nobody marked the row disconnected.
    with app.app_context():
        last_seen = None if silent is None else dt.datetime.utcnow() - dt.timedelta(seconds=silent)
        db.session.add(GatewayRow(name="gw1", connected=True, last_seen=last_seen, session_replica="gone:8080",
                                  session_id="0" * 32))
        db.session.commit()
    assert [gw["connected"] for gw in api.call("GET", "/api/v1/gateways").get_json()["items"]] == [shown]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "og_server_gateways_connected %.1f" % (1 if shown else 0) in metrics.splitlines()


def test_replica_name_defaults_to_the_host_name_and_listen_port():
    base = {"secret_key": "s" * 32, "listen": "127.0.0.1:8081"}
    assert config.load(overrides=base, environ={})["replica_name"] == socket.gethostname() + ":8081"
    assert config.load(overrides=dict(base, replica_name="og-1"), environ={})["replica_name"] == "og-1"
    with pytest.raises(config.ConfigError) as err:
        config.load(overrides=dict(base, replica_name=["og-1"]), environ={})
    assert err.value.problems == ["replica_name ['og-1'] must be a string of at most 128 characters, unique among "
                                  "the replicas and the same across restarts (empty: <hostname>:<listen port>)"]
