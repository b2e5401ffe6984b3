"""Server replicas on one database (PostgreSQL, and MariaDB, which outputGuard used): changes reach gateways on any
replica, one resolver with takeover, and kill -9 of a replica during a stream of writes loses no acknowledged
write."""

import itertools
import threading
import time

import pytest
import requests
import websocket

from og_kernel.og_elements import Holding
from tests.support.nslib import wait_until
from tests.support.serverlib import Gateway, Server, converged


@pytest.fixture(params=["postgresql", "mariadb"])
def replicas(request, tmp_path):
    url = request.getfixturevalue("postgres" if request.param == "postgresql" else "mariadb").create_database()
    a = Server(str(tmp_path / "a"), database_url=url, resolve_interval=5)
    b = Server(str(tmp_path / "b"), database_url=url, replica_of=a, resolve_interval=5)
    yield a, b
    for server in (a, b):
        server.stop()


def test_a_change_accepted_by_one_replica_reaches_gateways_on_the_other(replicas):
    a, b = replicas
    on_b = Gateway(b, "gw-on-b")
    on_b.hello()
    on_b.apply_next()
    on_a = Gateway(a, "gw-on-a")
    on_a.hello()
    on_a.apply_next()
    entry = a.add("198.51.100.10")
    assert on_b.apply_next() == "delta" and "198.51.100.10/32" in on_b.elements
    assert on_a.apply_next() == "delta"
    b.remove(entry)
    assert on_a.apply_next() == "delta" and "198.51.100.10/32" not in on_a.elements
    assert on_b.apply_next() == "delta" and on_a.elements == on_b.elements
    # Both replicas show both gateways from the shared database.
    wait_until(lambda: set(a.gateways()) == set(b.gateways()) == {"gw-on-a", "gw-on-b"}, timeout=10,
               what="fleet visible on both replicas")


def test_held_digests_follow_the_other_replicas_writes_and_a_reconnect_gets_a_delta(replicas):
    # Each replica keeps the published set in memory and follows the shared log: the digest each compares a
    # gateway's ack with must be right after writes on the other replica too (digest_match, no snapshot).
    a, b = replicas
    holding = Holding([4], ["198.51.100.0/28"])
    gateways = {"a": Gateway(a, "gw-held-a", holding=holding), "b": Gateway(b, "gw-held-b", holding=holding)}
    for gw in gateways.values():
        gw.hello()
        assert gw.apply_next() == "snapshot"
    made = []
    writes = [(a, "198.51.100.5"), (b, "198.51.100.50"), (a, "2001:db8::5"), (b, "203.0.113.0/24"),
              (a, "remove"), (b, "remove"), (a, "198.51.100.51")]
    for server, target in writes:
        if target == "remove":
            server.remove(made.pop(0))
        else:
            made.append(server.add(target))
        for name, gw in gateways.items():
            assert gw.apply_next() == "delta"
            wait_until(lambda: converged(a if name == "a" else b, gw), timeout=20, what="%s's ack matches" % gw.name)
    assert gateways["a"].elements == gateways["b"].elements == {"198.51.100.51/32", "203.0.113.0/24"}
    # A gateway a revision behind reconnects to the other replica: its digest matches that revision there.
    behind = gateways["b"]
    behind.close()
    b.remove(made.pop(1))           # 203.0.113.0/24
    again = Gateway(a, "gw-held-b", revision=behind.revision, elements=behind.elements, holding=holding)
    again.hello()
    assert again.apply_next() == "delta" and again.elements == {"198.51.100.51/32"}
    wait_until(lambda: converged(a, again), timeout=20, what="the reconnected gateway matches")


def test_exactly_one_resolver_and_takeover_when_its_replica_dies(replicas):
    a, b = replicas

    def leaders():
        return [s for s in (a, b) if s.proc.poll() is None and s.readyz()["resolver"]["leader"]]
    wait_until(lambda: len(leaders()) == 1, timeout=20, what="one resolver leader")
    for dummy in range(5):
        assert len(leaders()) == 1
        time.sleep(0.5)
    leader = leaders()[0]
    other = b if leader is a else a
    leader.kill9()
    wait_until(lambda: other.readyz()["resolver"]["leader"], timeout=40, what="the other replica takes over")


def test_kill_9_of_a_replica_during_writes_loses_no_acknowledged_write(replicas):
    a, b = replicas
    watcher = Gateway(b, "gw-watch")
    watcher.hello()
    watcher.apply_next()
    acknowledged = []
    stop = threading.Event()
    counter = itertools.count(1)

    def writer():
        servers = itertools.cycle((a, b))
        while not stop.is_set():
            n = next(counter)
            target = "198.51.%d.%d" % (100 + n // 250, n % 250 + 1) if n < 500 else None
            if target is None:
                return
            server = next(servers)
            try:
                response = requests.post(server.url + "/api/v1/entries", json={"target": target}, timeout=5,
                                         headers={"Authorization": "Bearer " + a.admin})
            except requests.RequestException:
                continue           # not acknowledged: may or may not be stored
            if response.status_code == 201:
                acknowledged.append(target)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    # Restarts can take tens of seconds on a loaded machine: the watcher must stay alive meanwhile.
    with watcher.heartbeats():
        try:
            for dummy in range(3):
                time.sleep(1.0)
                a.kill9()              # in the middle of the stream
                time.sleep(0.5)
                a.start()
        finally:
            stop.set()
            thread.join(timeout=30)
    stored = {e["target"] for e in b.api("GET", "/api/v1/entries/export").json()["entries"]}
    lost = set(acknowledged) - stored
    print("acknowledged %d writes, lost %d" % (len(acknowledged), len(lost)))
    assert acknowledged and not lost
    # The gateway on the surviving replica converges on the complete set (digest_match: the same digest).
    watcher.ws.settimeout(1)
    deadline = time.monotonic() + 30
    while not converged(b, watcher):
        assert time.monotonic() < deadline, "gateway did not converge"
        try:
            watcher.apply_next()
        except websocket.WebSocketTimeoutException:
            pass
    assert watcher.elements == {t + "/32" for t in stored}


def test_with_the_database_down_the_api_answers_503_and_recovers_by_itself(postgres, tmp_path):
    url = postgres.create_database()
    server = Server(str(tmp_path / "s"), database_url=url)
    gw = Gateway(server, "gw-db")
    try:
        gw.hello()
        gw.apply_next()
        server.add("198.51.100.10")
        gw.apply_next()
        postgres.stop()
        response = requests.post(server.url + "/api/v1/entries", json={"target": "198.51.100.11"}, timeout=10,
                                 headers={"Authorization": "Bearer " + server.admin})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        postgres.start()
        wait_until(lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200, timeout=30,
                   what="ready again")
        assert server.add("198.51.100.11")["revision"] == 2
        # The gateway (reconnected or not) ends up with both.
        gw2 = Gateway(server, "gw-db-2")
        gw2.hello()
        gw2.apply_next()
        assert gw2.elements == {"198.51.100.10/32", "198.51.100.11/32"}
    finally:
        if not postgres.running():
            postgres.start()
        server.stop()
