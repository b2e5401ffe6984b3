"""Parts of the chaos suite: server replicas in a namespace on one PostgreSQL, a writer that records what was
acknowledged, a client that counts its errors, and the measurements taken after each fault.

The servers run in the topology's server namespace (tests/support/agentlib.py Topology: srv 10.99.0.2, reached by
the gateway over mgmt0). PostgreSQL (tests/support/pglib.py) runs in the root namespace on 127.0.0.1, which the server
namespace cannot reach over TCP; the replicas use its Unix socket instead (a file, shared by every namespace).
The test process talks to the replicas from threads that entered the server namespace with setns(2): only that
thread changes namespace, the process itself stays in the root namespace and touches nothing there.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import requests
import yaml

from tests.support import BIN
from tests.support.agentlib import SERVER_ADDR, kernel_elements
from tests.support.nslib import READY_TIMEOUT, enter_netns, in_netns, wait_ready, wait_until



def socket_url(postgres, tcp_url):
    """The same database as `tcp_url`, reached through the cluster's Unix socket (works from any namespace)."""
    name = tcp_url.rsplit("/", 1)[1]
    return "postgresql+psycopg://postgres@/%s?host=%s&port=%d" % (name, postgres.sock, postgres.port)


def element(target):
    return target if "/" in target else target + "/32"


# ---- server replicas -----------------------------------------------------------------------------------------
class Replica:
    """og-server on SERVER_ADDR:port inside the server namespace; the first replica makes the schema and tokens."""

    def __init__(self, ns, workdir, database_url, port, first=None):
        self.ns = ns
        self.port = port
        os.makedirs(str(workdir), exist_ok=True)
        self.config = os.path.join(str(workdir), "server.yml")
        self.log_file = os.path.join(str(workdir), "server.log")
        secret = first.secret if first else secrets.token_hex(16)
        self.secret = secret
        with open(self.config, "w") as fh:
            yaml.safe_dump({"listen": "0.0.0.0:%d" % port, "data_dir": os.path.join(str(workdir), "data"),
                            "secret_key": secret, "database_url": database_url, "threads": 16}, fh)
        if first is None:
            self._cli("db", "upgrade")
            self.admin = self._cli("token", "create", "--role", "admin").strip()
            self.gateway_token = self._cli("token", "create", "--role", "gateway", "--name", "gw1").strip()
        else:
            self.admin, self.gateway_token = first.admin, first.gateway_token
        self.url = "http://%s:%d" % (SERVER_ADDR, port)
        self.ws_url = "ws://%s:%d/ws/gateway" % (SERVER_ADDR, port)
        self.proc = None

    def _cli(self, *args):
        # The CLI reaches the database through the Unix socket, from the root namespace: no network involved.
        done = subprocess.run([os.path.join(BIN, "og-server"), "--config", self.config] + list(args),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, timeout=READY_TIMEOUT):
        with open(self.log_file, "a") as log:
            log.write("---- start %s\n" % time.strftime("%H:%M:%S"))
            log.flush()
            self.proc = self.ns.popen([os.path.join(BIN, "og-server"), "--config", self.config],
                                      stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.ready, self.proc, "og-server on port %d ready" % self.port, log=self.log_file, timeout=timeout)
        return self

    def log(self):
        with open(self.log_file) as fh:
            return fh.read()

    def pids(self):
        """The gunicorn master and its worker(s): the whole replica."""
        found = [self.proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as fh:
                found += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        return found

    def kill9(self):
        """A crash: SIGKILL to the master and its worker at once (nothing runs any clean-up)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=20)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()

    def call(self, method, path, timeout=10, **kw):
        """One REST call from inside the server namespace: requests.Response (or the exception raised)."""
        return in_netns(self.ns.name, requests.request, method, self.url + path, timeout=timeout,
                        headers={"Authorization": "Bearer " + self.admin}, **kw)

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
        response = self.call("GET", "/api/v1/gateways")
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["name"] == name:
                return item
        return None


# ---- the writer ------------------------------------------------------------------------------------------------
class Writer(threading.Thread):
    """Creates and deletes entries on the replicas in turn, recording every acknowledged (2xx) write.

    Targets come from a pool of documentation addresses that carry no service; a target is used again only
    after its deletion was acknowledged. A write without an answer is not acknowledged: its entry's state is
    unknown and it is left out of the checks (it may or may not have been committed)."""

    POOL = ["198.51.100.%d" % n for n in range(100, 255)] + ["203.0.113.%d" % n for n in range(100, 255)]
    LIVE = 12           # about this many of the writer's entries exist at any time

    def __init__(self, ns_name, replicas, admin, interval=0.1):
        super().__init__(name="chaos-writer", daemon=True)
        self.ns_name = ns_name
        self.replicas = replicas
        self.admin = admin
        self.interval = interval
        self.free = collections.deque(self.POOL)
        self.live = collections.deque()      # ids of acknowledged creates, oldest first
        self.created = {}                    # id -> target, every acknowledged create
        self.deleted = set()                 # ids whose delete was acknowledged
        self.uncertain = set()               # ids whose delete got no answer
        self.acknowledged = 0
        self.attempted = 0
        self.failures = collections.Counter()
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.idle = threading.Event()
        self.done = threading.Event()
        self.idle.set()

    def run(self):
        enter_netns(self.ns_name)
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + self.admin
        servers = itertools.cycle(self.replicas)
        while not self.done.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(0.2)
                continue
            self.idle.clear()
            if not self.running.is_set():
                continue
            self.write_once(session, next(servers).url)
            time.sleep(self.interval)
        self.idle.set()

    def write_once(self, session, url):
        delete = len(self.live) >= self.LIVE or (len(self.live) > 0 and not self.free)
        with self.lock:
            self.attempted += 1
        if delete:
            entry_id = self.live.popleft()
            try:
                response = session.delete("%s/api/v1/entries/%d" % (url, entry_id), timeout=5)
            except requests.RequestException as exc:
                with self.lock:
                    self.failures[type(exc).__name__] += 1
                    self.uncertain.add(entry_id)
                return
            if response.status_code == 204:
                with self.lock:
                    self.deleted.add(entry_id)
                    self.acknowledged += 1
                self.free.append(self.created[entry_id])
            else:
                with self.lock:
                    self.failures["DELETE %d" % response.status_code] += 1
                if response.status_code != 404:
                    self.live.appendleft(entry_id)   # refused (e.g. 503): the entry is still there
                # 404: an acknowledged create has vanished; lost() reports it
            return
        target = self.free.popleft()
        try:
            response = session.post(url + "/api/v1/entries", json={"target": target}, timeout=5)
        except requests.RequestException as exc:
            with self.lock:
                self.failures[type(exc).__name__] += 1
            return                              # the target may be stored: never used again
        if response.status_code == 201:
            entry_id = response.json()["id"]
            with self.lock:
                self.created[entry_id] = target
                self.acknowledged += 1
            self.live.append(entry_id)
        else:
            with self.lock:
                self.failures["POST %d" % response.status_code] += 1
            if response.status_code >= 500:
                self.free.append(target)        # refused before any commit (503 database_unavailable)

    def resume(self):
        self.running.set()

    def pause(self, timeout=30):
        """Stop writing and wait for the write in flight to end."""
        self.running.clear()
        wait_until(self.idle.is_set, timeout=timeout, what="the writer to pause")

    def finish(self):
        self.running.clear()
        self.done.set()
        self.join(timeout=30)

    def lost(self, stored_ids):
        """Acknowledged writes that the database does not show: creates missing and deletes still present."""
        with self.lock:
            missing = {i for i in self.created if i not in self.deleted and i not in self.uncertain
                       and i not in stored_ids}
            undead = {i for i in self.deleted if i in stored_ids}
        return sorted(missing), sorted(undead)


# ---- the client --------------------------------------------------------------------------------------------------
# Short requests on new connections (each one needs the gateway's rules) and one long download, until a stop
# file appears; errors are counted and the first ones kept with their time.
CLIENT = r"""
import http.client, json, os, sys, threading, time
host, progress, stop = sys.argv[1], sys.argv[2], sys.argv[3]
state = {"requests": 0, "request_errors": 0, "stream_bytes": 0, "streams": 0, "stream_errors": 0, "errors": []}
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


class Client:
    """The continuous transfer from the client namespace through the gateway."""

    def __init__(self, ns, host, workdir):
        self.progress_file = os.path.join(str(workdir), "client.json")
        self.stop_file = os.path.join(str(workdir), "client.stop")
        self.proc = ns.popen([sys.executable, "-c", CLIENT, host, self.progress_file, self.stop_file])

    def progress(self):
        for _ in range(20):
            try:
                with open(self.progress_file) as fh:
                    return json.load(fh)
            except (OSError, ValueError):
                time.sleep(0.05)
        return {}

    def stop(self, timeout=20):
        with open(self.stop_file, "w"):
            pass
        self.proc.wait(timeout=timeout)
        return self.progress()


# ---- measurement --------------------------------------------------------------------------------------------------
def desired(replica):
    """The set the server wants on every gateway: one element per stored entry (the suite uses addresses only)."""
    return sorted(element(t) for t in replica.entries().values())


def converged(replica, gw_ns):
    """The gateway's kernel sets equal the server's desired set, and the server sees it acknowledge its head."""
    try:
        want = desired(replica)
        state = replica.gateway()
    except (requests.RequestException, AssertionError):
        return False
    if not (state and state["connected"] and state["lag"] == 0 and state["digest_match"]):
        return False
    return kernel_elements(gw_ns) == want
