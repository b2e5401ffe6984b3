"""A real og-server process (gunicorn on loopback) and scripted gateways speaking docs/protocol.md, for tests."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time

import requests
import websocket
import yaml

from og_kernel.og_elements import digest
from tests.support import BIN, free_port
from tests.support.nslib import READY_TIMEOUT, wait_ready, wait_until

# Every og-server a test started and has not stopped: the session's end stops them (tests/conftest.py), so a
# test that fails half-way leaves no server behind.
RUNNING = set()


def stop_all():
    """Stop the og-servers tests left running (each by its own pid)."""
    for server in list(RUNNING):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - the clean-up goes on with the others
            if server.proc is not None:
                server.proc.kill()


def og_server(config, *args, env=None, timeout=120, check=True):
    """og-server's CLI on a config file: the CompletedProcess (asserted to succeed unless check=False).

    The CLI touches only files (or PostgreSQL's Unix socket), so it runs in the root namespace for every test,
    the namespaced servers' included."""
    done = subprocess.run([os.path.join(BIN, "og-server"), "--config", str(config)] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})),
                          check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


class ServerBase:
    """What every og-server process of the tests shares: its config file, the CLI on it, the tokens the first
    replica of a database makes, the process (in the root namespace, or inside `ns`), its log, a stop and a crash.

    Subclasses add the REST client of their side: Server (root namespace, on loopback) and
    agentlib.ServerProcess (inside a topology's server namespace)."""

    def __init__(self, workdir, config, first=None, ns=None, gateway_name=None, roles=("admin", "gateway", "viewer")):
        os.makedirs(str(workdir), exist_ok=True)
        self.workdir = str(workdir)
        self.ns = ns
        self.conf = os.path.join(self.workdir, "server.yml")
        self.log_file = os.path.join(self.workdir, "server.log")
        with open(self.conf, "w") as fh:
            yaml.safe_dump(config, fh)
        if first is None:
            self.cli("db", "upgrade")
            named = {"gateway": ["--name", gateway_name]} if gateway_name else {}
            self.tokens = {role: self.cli("token", "create", "--role", role, *named.get(role, [])).strip()
                           for role in roles}
        else:
            self.tokens = dict(first.tokens)
        self.admin = self.tokens["admin"]
        self.proc = None

    def cli(self, *args):
        """og-server's CLI on this server's config: its stdout (asserted to succeed)."""
        return og_server(self.conf, *args).stdout

    def ready(self):
        raise NotImplementedError

    def spawn(self, timeout=READY_TIMEOUT):
        """Start og-server and wait until /readyz answers 200."""
        RUNNING.add(self)
        argv = [os.path.join(BIN, "og-server"), "--config", self.conf]
        with open(self.log_file, "a") as log:
            log.write("---- start %s\n" % time.strftime("%H:%M:%S"))
            log.flush()
            if self.ns is None:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            else:
                self.proc = self.ns.popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.ready, self.proc, "og-server %s ready" % self.conf, log=self.log_file, timeout=timeout)
        return self

    def pids(self):
        """The gunicorn master and its worker(s): the whole server."""
        found = [self.proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as fh:
                found += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        return found

    def crash(self):
        """kill -9 of the master and its workers at once: the whole server gone without a goodbye."""
        RUNNING.discard(self)
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=20)
        wait_until(lambda: not any(os.path.exists("/proc/%d" % pid) for pid in pids[1:]), timeout=20,
                   what="the server's workers gone")

    def stop(self):
        """SIGTERM (a graceful stop) and wait for the exit (a crash if it does not come); returns the exit code."""
        RUNNING.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.crash()
        return None if self.proc is None else self.proc.returncode

    def log_text(self):
        with open(self.log_file) as fh:
            return fh.read()


class Server(ServerBase):
    """og-server on 127.0.0.1 with a free port, started at once. A replica of another Server shares its database
    and tokens."""

    def __init__(self, tmp, database_url=None, replica_of=None, **settings):
        self.tmp = tmp
        self.port = free_port()
        config = {"listen": "127.0.0.1:%d" % self.port, "data_dir": tmp, "secret_key": "s" * 32,
                  "database_url": database_url or "sqlite:///%s/og.db" % tmp, "threads": 16}
        config.update(settings)
        super().__init__(tmp, config, first=replica_of)
        self.gateway, self.viewer = self.tokens["gateway"], self.tokens["viewer"]
        self.url = "http://127.0.0.1:%d" % self.port
        self.ws_url = "ws://127.0.0.1:%d/ws/gateway" % self.port
        self.spawn()

    def start(self):
        return self.spawn()

    def kill9(self):
        """kill -9 of the master only (its worker follows it)."""
        RUNNING.discard(self)
        self.proc.kill()
        self.proc.wait(timeout=20)

    def readyz(self):
        return requests.get(self.url + "/readyz", timeout=5).json()

    def og(self, *args):
        return self.cli(*args)

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
