"""Parts of the chaos suite: a writer that records what was acknowledged, and the measurements taken after each
fault. The replicas are agentlib.ServerProcess on one PostgreSQL, the client agentlib.TRAFFIC.

The servers run in the topology's server namespace (tests/support/agentlib.py Topology: srv 10.99.0.2, reached by
the gateway over mgmt0). PostgreSQL (tests/support/pglib.py) runs in the root namespace on 127.0.0.1, which the
server namespace cannot reach over TCP; the replicas use its Unix socket instead (a file, shared by every
namespace). The test process talks to the replicas from threads that entered the server namespace with setns(2):
only that thread changes namespace, the process itself stays in the root namespace and touches nothing there.
"""
from __future__ import annotations

import collections
import itertools
import threading
import time

import requests

from tests.support.agentlib import kernel_elements
from tests.support.nslib import enter_netns, wait_until


def socket_url(postgres, tcp_url):
    """The same database as `tcp_url`, reached through the cluster's Unix socket (works from any namespace)."""
    name = tcp_url.rsplit("/", 1)[1]
    return "postgresql+psycopg://postgres@/%s?host=%s&port=%d" % (name, postgres.sock, postgres.port)


def element(target):
    return target if "/" in target else target + "/32"


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
