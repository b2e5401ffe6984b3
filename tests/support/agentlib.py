"""Helpers for the gateway agent tests: a scripted WebSocket server, real agent and server processes, a topology.

Everything that touches the network runs inside namespaces the tests make (tests/support/nslib.py). The scripted
server's listening socket is created by a short-lived thread that enters the gateway's namespace with
setns(2); the thread ends at once, so the test process itself never leaves the root namespace.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage)

from gateway_agent.tls import url_problems
from tests.support import BIN, TOP
from tests.support.nslib import READY_TIMEOUT, in_netns, link, wait_until
from tests.support.serverlib import ServerBase

HTTP = os.path.join(TOP, "scripts", "lab_http.py")
CLIENT_NET = "10.88.0.0/24"
ALLOWED = "198.51.100.10"
OTHER = "198.51.100.20"
SERVICES = [ALLOWED + ":80", OTHER + ":80", "203.0.113.10:80"]
SERVER_ADDR = "10.99.0.2"
TOKEN = "ogg_test-gateway-token-0123456789abcdef"


def unique_tag():
    """A short random tag so that namespaces never collide with another session's."""
    return "a" + secrets.token_hex(2)


# ---- the kernel as the test reads it (independently of og_firewall's own reading) -----------------------
def kernel_elements(ns, out_set="og-allow4", ported_set="og-allowp4"):
    """Sorted element texts in the gateway's allowed sets, parsed here from `ipset list -o save`."""
    found = []
    for name, port_set in ((out_set, False), (ported_set, True)):
        res = ns.run(["ipset", "list", "-o", "save", name], check=False)
        for line in res.stdout.splitlines():
            words = line.split()
            if len(words) < 3 or words[0] != "add":
                continue
            if port_set:
                host, dummy, proto_port = words[2].partition(",")
                proto, dummy, port = proto_port.partition(":")
                net = host if "/" in host else host + "/32"
                found.append("%s %s/%s" % (net, port, proto))
            else:
                found.append(words[2] if "/" in words[2] else words[2] + "/32")
    return sorted(found)


def forward_rules(ns):
    return [line for line in ns.run(["iptables", "-S"]).stdout.splitlines() if "OG-" in line]


# ---- metrics ----------------------------------------------------------------------------------------------
def scrape(ns, port=9900):
    """{(sample name, sorted label items): value} from the agent's /metrics inside ns."""
    res = ns.run(["curl", "-sS", "-m", "5", "--fail", "http://127.0.0.1:%d/metrics" % port])
    samples = {}
    for family in text_string_to_metric_families(res.stdout):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def http_status(ns, url):
    res = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", url], check=False)
    return res.stdout.strip()


# ---- a scripted WebSocket server -------------------------------------------------------------------------
def listen_in_netns(name, host="127.0.0.1"):
    """A listening TCP socket that lives in network namespace `name` (made by a thread that enters it)."""
    def listen():
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(8)
        return sock
    return in_netns(name, listen)


class ScriptedConnection:
    """One agent connection, driven by the test: read its frames, send any frame (good or bad)."""

    def __init__(self, sock):
        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self.frames = queue.Queue()
        self.headers = {}
        self.target = None
        self.accepted = threading.Event()
        self.closed = threading.Event()
        self.close_code = None
        self.close_reason = None
        self._write_lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()

    def _write(self, data):
        with self._write_lock:
            self.sock.sendall(data)

    def _reader(self):
        parts = []
        try:
            while True:
                data = self.sock.recv(65536)
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, Request):
                        self.target = event.target
                        self.headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
                        self._write(self.ws.send(AcceptConnection()))
                        self.accepted.set()
                    elif isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self.frames.put(json.loads("".join(parts)))
                            parts = []
                    elif isinstance(event, Ping):
                        self._write(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self.close_code, self.close_reason = event.code, event.reason
                        try:
                            self._write(self.ws.send(event.response()))
                        except Exception:  # noqa: BLE001 - the peer may be gone already
                            pass
                        return
                if not data:
                    return
        except (OSError, ValueError):
            return
        finally:
            self.closed.set()
            self.sock.close()

    def send(self, frame):
        """Send a dict as JSON, a str as is (malformed on purpose), bytes as a binary frame."""
        if isinstance(frame, dict):
            frame = json.dumps(dict({"v": 1}, **frame))
        event = BytesMessage(data=frame) if isinstance(frame, bytes) else TextMessage(data=frame)
        self._write(self.ws.send(event))

    def next(self, timeout=30.0, skip=("heartbeat", "counters")):
        """The next frame from the agent that is not a heartbeat or counters frame."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no frame from the agent within %.0fs" % timeout) from None
            if frame.get("type") not in skip:
                return frame

    def close(self, code=1000, reason="test"):
        """Send a close frame and wait until the agent has answered it (or hung up)."""
        try:
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        except Exception:  # noqa: BLE001
            pass
        self.closed.wait(5)


class ScriptedServer:
    """A WebSocket server inside a namespace that hands each agent connection to the test."""

    def __init__(self, ns_name):
        self.sock = listen_in_netns(ns_name)
        self.port = self.sock.getsockname()[1]
        self.connections = queue.Queue()
        self.all = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws/gateway" % self.port

    def _accept(self):
        while True:
            try:
                sock, dummy = self.sock.accept()
            except OSError:
                return
            conn = ScriptedConnection(sock)
            self.all.append(conn)
            self.connections.put(conn)

    def next_connection(self, timeout=30.0):
        try:
            conn = self.connections.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the agent did not connect within %.0fs" % timeout) from None
        assert conn.accepted.wait(timeout)
        return conn

    def close(self):
        """Stop listening (new connections are refused) and close every connection."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close() alone would not
        except OSError:
            pass
        self.sock.close()
        for conn in self.all:
            conn.close()


# ---- the agent as a real process ----------------------------------------------------------------------------
class AgentProcess:
    """og-gateway-agent running inside the gateway namespace, logging to a file the test reads."""

    def __init__(self, ns, workdir, servers, token, name="gw1", extra=()):
        self.ns = ns
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.state_file = os.path.join(self.workdir, "state", "state.json")
        self.log_file = os.path.join(self.workdir, "agent.log")
        # Never the default under /var/lib: a test's agent writes the server's domain entries beside its state.
        self.domains_file = os.path.join(self.workdir, "state", "domains.json")
        # Nor og-dns's spool: the agent sends what a test writes there (tests/agent/test_agent_learned.py).
        self.spool_dir = os.path.join(self.workdir, "state", "dns-spool")
        token_file = os.path.join(self.workdir, "gateway.token")
        with open(token_file, "w") as fh:
            fh.write(token + "\n")
        self.argv = [os.path.join(BIN, "og-gateway-agent"), "--name", name, "--token-file", token_file,
                     "--client-network", CLIENT_NET, "--outside-interface", "og-out",
                     "--state-file", self.state_file, "--dns-domains-file", self.domains_file,
                     "--dns-spool-dir", self.spool_dir,
                     "--metrics-listen", "0.0.0.0:9900"]
        for url in servers:
            self.argv += ["--server", url]
        # These tests' servers speak plain ws:// beyond loopback; TLS has tests of its own (test_agent_tls.py).
        if url_problems(servers, False):
            self.argv.append("--allow-insecure-transport")
        self.argv += list(extra)
        self.proc = None

    def start(self):
        env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1", PYTHONUNBUFFERED="1")
        with open(self.log_file, "a") as log:
            log.write("---- start\n")
            log.flush()
            self.proc = self.ns.popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def log(self):
        with open(self.log_file) as fh:
            return fh.read()

    def log_since_start(self):
        return self.log().rsplit("---- start\n", 1)[-1]

    def wait_log(self, text, timeout=30.0):
        wait_until(lambda: text in self.log_since_start() or self._dead(), timeout=timeout,
                   what="%r in the agent's log" % text)
        assert text in self.log_since_start(), self.log_since_start()[-3000:]

    def _dead(self):
        return self.proc.poll() is not None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout=15):
        """SIGTERM; return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def saved_state(self):
        with open(self.state_file) as fh:
            return json.load(fh)


# ---- the real server ------------------------------------------------------------------------------------------
class ServerProcess(ServerBase):
    """og-server on SERVER_ADDR:port inside the topology's server namespace, its log in workdir (start() starts it).

    With its own SQLite database by default, or on `database_url`; the first replica of a database makes the
    schema, an admin and a gateway token, and a replica given `first` shares them (and the secret key)."""

    def __init__(self, ns, workdir, port=8080, database_url=None, first=None, address=SERVER_ADDR, settings=None):
        self.port = port
        data = os.path.join(str(workdir), "data")
        self.secret = first.secret if first else secrets.token_hex(16)
        super().__init__(workdir, {"listen": "0.0.0.0:%d" % port, "data_dir": data, "secret_key": self.secret,
                                   "database_url": database_url or "sqlite:///%s" % os.path.join(data, "og.db"),
                                   "threads": 16, **(settings or {})},
                         first=first, ns=ns, gateway_name="gw1", roles=("admin", "gateway"))
        self.config = self.conf
        self.gateway_token = self.tokens["gateway"]
        self.url = "http://%s:%d" % (address, port)
        self.ws_url = "ws://%s:%d/ws/gateway" % (address, port)

    def start(self, timeout=READY_TIMEOUT):
        return self.spawn(timeout=timeout)

    def log(self):
        return self.log_text()

    def kill9(self):
        """A crash: SIGKILL to the master and its worker at once (nothing runs any clean-up)."""
        self.crash()

    def call(self, method, path, timeout=10, **kw):
        """One REST call from inside the server namespace: requests.Response (or the exception raised)."""
        return in_netns(self.ns.name, requests.request, method, self.url + path, timeout=timeout,
                        headers={"Authorization": "Bearer " + self.admin}, **kw)

    def api(self, method, path, body=None):
        """(status, parsed JSON body, the text when not JSON, or None when empty) of one REST call."""
        response = self.call(method, path, **({} if body is None else {"json": body}))
        if not response.text.strip():
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def ready(self):
        try:
            return self.call("GET", "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def entries(self):
        """{id: target} of every stored entry."""
        response = self.call("GET", "/api/v1/entries/export", timeout=30)
        assert response.status_code == 200, response.text
        return {row["id"]: row["target"] for row in response.json()["entries"]}

    def gateway(self, name="gw1"):
        """The gateway's row of /api/v1/gateways, with the server's head revision as "head"."""
        status, body = self.api("GET", "/api/v1/gateways")
        assert status == 200, body
        for item in body["items"]:
            if item["name"] == name:
                return dict(item, head=body["revision"])
        return None

    def converged(self, name="gw1"):
        """True when the gateway acknowledged the head revision with the server's digest."""
        gw = self.gateway(name)
        return bool(gw and gw["applied_revision"] == gw["head"] and gw["digest_match"])

    def add(self, target):
        status, body = self.api("POST", "/api/v1/entries", {"target": target})
        assert status == 201, body
        return body

    def delete(self, entry_id):
        status, body = self.api("DELETE", "/api/v1/entries/%s" % entry_id)
        assert status == 204, body


# ---- the topology -------------------------------------------------------------------------------------------
class Topology:
    """client (10.88.0.2) -> gw (10.88.0.1 | og-out 203.0.113.2 | mgmt0 10.99.0.1) -> inet (203.0.113.1 + services)
    and srv (10.99.0.2, the server), each a namespace; the gateway can be destroyed and rebuilt ("rebooted")."""

    def __init__(self, make, tag):
        self.make = make
        self.tag = tag
        self.client = make(tag + "c")
        self.inet = make(tag + "i")
        self.srv = make(tag + "s")
        for svc in SERVICES:
            self.inet.ip("addr", "replace", svc.split(":", maxsplit=1)[0] + "/32", "dev", "lo")
        self.build_gateway()
        self.http = self.inet.popen([sys.executable, HTTP] + SERVICES)
        wait_until(lambda: self.inet.run(["curl", "-s", "-m", "1", "http://%s/" % ALLOWED],
                                         check=False).returncode == 0, timeout=10, what="internet HTTP services")

    def build_gateway(self):
        self.gw = self.make(self.tag + "gw")
        link(self.client, "eth0", "10.88.0.2/24", self.gw, "lan0", "10.88.0.1/24")
        link(self.gw, "og-out", "203.0.113.2/24", self.inet, "eth0", "203.0.113.1/24")
        link(self.gw, "mgmt0", "10.99.0.1/24", self.srv, "eth0", SERVER_ADDR + "/24")
        self.client.ip("route", "replace", "default", "via", "10.88.0.1")
        self.gw.ip("route", "replace", "default", "via", "203.0.113.1")
        self.gw.sysctl("net.ipv4.ip_forward", 1)

    def rebuild_gateway(self):
        """Destroy the gateway namespace (all its kernel state and processes) and build it again."""
        self.gw.delete()

        def gone():
            return all("eth0" not in ns.ip("-o", "link", "show").stdout for ns in (self.client, self.inet, self.srv))
        wait_until(gone, timeout=10, what="the old gateway's links to disappear")
        self.build_gateway()

    def curl(self, host, path="/", timeout=3):
        """(exit code, body length) of one HTTP GET from the client."""
        res = self.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "-m", str(timeout),
                               "http://%s%s" % (host, path)], check=False, timeout=timeout + 10)
        return res.returncode, int(res.stdout or 0)

    def reaches(self, host):
        return self.curl(host)[0] == 0


# ---- client traffic that runs on its own while the test changes things --------------------------------------
# Streams an upload to /sink (a long-lived flow that keeps sending) until an error or the time limit.
UPLOAD = r"""
import json, os, socket, sys, time
host, progress, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
def report(**data):
    with open(progress + ".tmp", "w") as fh:
        json.dump(data, fh)
    os.replace(progress + ".tmp", progress)
sent, error = 0, None
try:
    s = socket.create_connection((host, 80), timeout=5)
    s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999\r\n\r\n")
    end, chunk, last = time.monotonic() + limit, b"x" * 4096, 0
    while time.monotonic() < end:
        s.sendall(chunk)
        sent += len(chunk)
        if time.monotonic() - last > 0.05:
            report(sent=sent, error=None, done=False)
            last = time.monotonic()
        time.sleep(0.005)
except OSError as exc:
    error = type(exc).__name__
report(sent=sent, error=error, done=True)
"""

# Short requests on new connections (each one needs the gateway's rules) and one long download (opened again
# after an error), until a stop file appears; errors are counted and the first ones kept with their time.
TRAFFIC = r"""
import http.client, json, os, sys, threading, time
host, progress, stop = sys.argv[1], sys.argv[2], sys.argv[3]
state = {"requests": 0, "requests_ok": 0, "request_errors": 0, "stream_bytes": 0, "streams": 0, "stream_errors": 0,
         "errors": []}
lock = threading.Lock()
def failed(kind, exc):
    with lock:
        state[kind] += 1
        if len(state["errors"]) < 300:
            state["errors"].append("%.3f %s %s: %s" % (time.time(), kind, type(exc).__name__, str(exc)[:120]))
def stream():
    while not os.path.exists(stop):
        state["streams"] += 1
        try:
            conn = http.client.HTTPConnection(host, 80, timeout=5)
            conn.request("GET", "/bytes/9999999999")
            resp = conn.getresponse()
            while not os.path.exists(stop):
                data = resp.read(16384)
                if not data:
                    raise EOFError("stream ended early")
                state["stream_bytes"] += len(data)
                time.sleep(0.02)
            conn.close()
        except Exception as exc:
            failed("stream_errors", exc)
            time.sleep(0.2)
def requests():
    while not os.path.exists(stop):
        try:
            conn = http.client.HTTPConnection(host, 80, timeout=5)
            conn.request("GET", "/bytes/20000")
            body = conn.getresponse().read()
            conn.close()
            if len(body) != 20000:
                raise EOFError("short body %d" % len(body))
            with lock:
                state["requests_ok"] += 1
        except Exception as exc:
            failed("request_errors", exc)
        with lock:
            state["requests"] += 1
        time.sleep(0.1)
threads = [threading.Thread(target=stream), threading.Thread(target=requests)]
for t in threads:
    t.start()
def report():
    with lock:
        text = json.dumps(state)
    with open(progress + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(progress + ".tmp", progress)
while any(t.is_alive() for t in threads):
    report()
    time.sleep(0.1)
state["done"] = True
report()
"""


class Background:
    """A client script running in a namespace that reports its progress through a JSON file."""

    def __init__(self, ns, code, args, workdir, name):
        self.progress_file = os.path.join(str(workdir), name + ".json")
        self.stop_file = os.path.join(str(workdir), name + ".stop")
        self.proc = ns.popen([sys.executable, "-c", code] + [str(a) for a in args(self)])

    def progress(self):
        try:
            with open(self.progress_file) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def stop(self, timeout=20):
        with open(self.stop_file, "w"):
            pass
        self.proc.wait(timeout=timeout)
        return self.progress()
