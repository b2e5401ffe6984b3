"""A real og-server process (gunicorn on loopback) and scripted gateways speaking docs/protocol.md, for tests."""

import contextlib
import json
import os
import signal
import subprocess
import threading

import requests
import websocket
import yaml

from og_kernel.og_elements import digest
from tests.support import BIN, free_port
from tests.support.nslib import wait_ready, wait_until

# Every og-server a test started and has not stopped: the session's end stops them (tests/conftest.py), so a
# test that fails half-way leaves no server behind.
RUNNING = set()


def stop_all():
    """Stop the og-servers tests left running (each by its own pid)."""
    for server in list(RUNNING):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - the clean-up goes on with the others
            server.proc.kill()


class Server:
    """og-server on 127.0.0.1 with a free port. A replica of another Server shares its database and tokens."""

    def __init__(self, tmp, database_url=None, replica_of=None, **settings):
        os.makedirs(tmp, exist_ok=True)
        self.tmp = tmp
        self.port = free_port()
        self.conf = os.path.join(tmp, "server.yml")
        config = {"listen": "127.0.0.1:%d" % self.port, "data_dir": tmp, "secret_key": "s" * 32,
                  "database_url": database_url or "sqlite:///%s/og.db" % tmp, "threads": 16}
        config.update(settings)
        with open(self.conf, "w") as fh:
            yaml.safe_dump(config, fh)
        if replica_of is None:
            self.og("db", "upgrade")
            self.admin = self.og("token", "create", "--role", "admin").strip()
            self.gateway = self.og("token", "create", "--role", "gateway").strip()
            self.viewer = self.og("token", "create", "--role", "viewer").strip()
        else:
            self.admin, self.gateway, self.viewer = replica_of.admin, replica_of.gateway, replica_of.viewer
        self.url = "http://127.0.0.1:%d" % self.port
        self.ws_url = "ws://127.0.0.1:%d/ws/gateway" % self.port
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.tmp, "server.log"), "a")
        RUNNING.add(self)
        self.proc = subprocess.Popen([os.path.join(BIN, "og-server"), "--config", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(self.ready, self.proc, "og-server on port %d ready" % self.port, log=self.log.name)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=20)
        self.log.close()

    def crash(self):
        """kill -9 of the master and its worker: the whole server is gone at once, without a goodbye."""
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as fh:
            workers = [int(pid) for pid in fh.read().split()]
        self.kill9()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(os.path.exists("/proc/%d" % pid) for pid in workers), timeout=20,
                   what="the server's worker gone")

    def readyz(self):
        return requests.get(self.url + "/readyz", timeout=5).json()

    def og(self, *args):
        done = subprocess.run([os.path.join(BIN, "og-server"), "--config", self.conf] + list(args),
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def ready(self):
        try:
            return requests.get(self.url + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def api(self, method, path, **kw):
        response = requests.request(method, self.url + path, timeout=30,
                                    headers={"Authorization": "Bearer " + self.admin}, **kw)
        assert response.status_code < 400, response.text
        return response

    def add(self, target, **extra):
        return self.api("POST", "/api/v1/entries", json=dict(target=target, **extra)).json()

    def remove(self, entry):
        self.api("DELETE", "/api/v1/entries/%d" % entry["id"])

    def gateways(self):
        return {g["name"]: g for g in self.api("GET", "/api/v1/gateways").json()["items"]}

    def stop(self):
        """SIGTERM (a graceful stop) and wait for the exit; returns the exit code."""
        RUNNING.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()
        return self.proc.returncode

    def log_text(self):
        with open(os.path.join(self.tmp, "server.log")) as fh:
            return fh.read()


class Gateway:
    """A scripted gateway: its 'kernel' is a Python set. With a holding (og_elements.Holding) it states it in
    its hello and keeps out what the holding skips, as a real agent's firewall does; without, it is an agent
    from before "holds" (docs/protocol.md)."""

    def __init__(self, server, name, token=None, revision=0, elements=(), holding=None):
        self.server = server
        self.name = name
        self.revision = revision
        self.elements = set(elements)
        self.holding = holding
        self.ws = websocket.create_connection(
            server.ws_url, timeout=10,
            header=["Authorization: Bearer " + (token or server.gateway)])

    def send(self, **msg):
        msg["v"] = 1
        self.ws.send(json.dumps(msg))

    def recv(self):
        while True:
            msg = json.loads(self.ws.recv())
            if msg["type"] != "heartbeat":
                return msg

    def hello(self, with_digest=True):
        extra = {"digest": digest(self.elements)} if with_digest else {}
        if self.holding is not None:
            extra["holds"] = self.holding.to_wire()
        self.send(type="hello", name=self.name, agent_version="test", revision=self.revision, **extra)

    def apply_next(self):
        """Receive one snapshot (all chunks) or delta, apply it, ack it; return the message type."""
        msg = self.last = self.recv()
        if msg["type"] == "snapshot":
            chunks, elements = msg["chunks"], list(msg["elements"])
            for dummy in range(chunks - 1):
                more = self.recv()
                assert more["type"] == "snapshot" and more["revision"] == msg["revision"]
                elements += more["elements"]
            self.elements = set(elements)
            self.revision = msg["revision"]
            self.last_chunks = chunks
        elif msg["type"] == "delta":
            assert msg["base"] == self.revision, msg
            self.elements = (self.elements - set(msg["remove"])) | set(msg["add"])
            self.revision = msg["revision"]
        else:
            raise AssertionError("unexpected %r" % msg)
        if self.holding is not None:
            self.elements -= set(self.holding.skipped(self.elements))
        self.send(type="ack", revision=self.revision, digest=digest(self.elements), count=len(self.elements))
        return msg["type"]

    @contextlib.contextmanager
    def heartbeats(self, every=5.0):
        """Send heartbeats from a thread while the test does not read (a real agent beats every 10 s, and a
        server closes a session silent for 30 s); websocket-client serialises sends with a lock."""
        stop = threading.Event()

        def beat():
            while not stop.wait(every):
                self.send(type="heartbeat")
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)

    def close_frame(self, timeout=10):
        """Read until the server's close frame; return its (code, reason). Other frames are skipped."""
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big"), data[2:].decode()

    def close(self):
        self.ws.close()


def snapshots_sent(server, name):
    """{reason: count} of the snapshots the server says it sent to gateway `name` (og_server_snapshots_sent)."""
    counts = {}
    for line in requests.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("og_server_snapshots_sent_total{") and 'gateway="%s"' % name in line:
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def converged(server, gw):
    state = server.gateways().get(gw.name)
    return state and state["digest_match"] and state["lag"] == 0
