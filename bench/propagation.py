"""Propagation latency: from an API write to every gateway, with 1, 100 and 1,000 connected gateways.

One real og-gateway-agent (its kernel set is polled with `ipset test`) and N-1 light protocol clients that
speak docs/protocol.md and ack with correct digests. Everything runs inside one network namespace (ogt-bprop)
that this script creates and removes: og-server (a real process: gunicorn master and one gthread worker) on
its 127.0.0.1, the agent with a veth as its outside interface. The baseline is the run with 1 gateway; the
ratios show how latency grows with the fleet.

A second part preloads a large allowlist (--big-entries, default 100,000, imported in batches with
server_app.services.entries.import_entries) and measures, with 1 gateway (its baseline) and 1,000: the time
until every gateway acked the snapshot, the server's RSS and CPU seconds while they connect and during a
stream of writes, and the writes' propagation.

The light clients must not be the bottleneck: they run in several worker processes (--clients-per-process,
default 250), each a single-threaded selector loop over raw WebSocket connections. A snapshot chunk is
decoded once per process (by the first connection that receives it); every other connection reads only
the chunk's first bytes (revision, chunk number) and skips the rest with recv_into, then acks with the
digest that process computed. Deltas are small and decoded by every connection (their arrival time is the
measurement). Each worker reports its own CPU seconds, so the output shows how busy the client side was.

--profile-server runs og-server with cProfile in every thread of its worker (a sitecustomize.py put on its
PYTHONPATH; the product code is untouched) and prints the top functions; it slows the server, so its
figures are for finding where the time goes, not for the table.

    .venv/bin/python bench/propagation.py [--fleets 1,100,1000] [--writes 40] [--big-entries 100000]
        [--big-fleets 1,1000] [--clients-per-process 250] [--profile-server]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BENCH = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(BENCH)
sys.path.insert(0, TOP)  # the repository, for the package tests.support
NS = os.environ.get("OG_TEST_PREFIX", "ogt-") + "bprop"  # the tests' namespace prefix (tests/support/nslib.py)
APPLIED_DELTA = re.compile(r"applied delta \d+->\d+ .* duration=([0-9.]+)s")
SNAPSHOT_HEAD = re.compile(rb'^\{"type":"snapshot","revision":(\d+),"chunk":(\d+),"chunks":(\d+),')
HEAD_BYTES = 96          # enough of a frame to read a snapshot chunk's revision and chunk number
IMPORT_BATCH = 20000


def orchestrate(args):
    from tests.support import nslib
    ns = nslib.Netns(NS)
    try:
        ns.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
        ns.ip("link", "set", "og-out", "up")
        ns.ip("link", "set", "og-peer", "up")
        env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1")
        proc = subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inside"] + sys.argv[1:],
                              env=env, timeout=7200, check=False)
        return proc.returncode
    finally:
        ns.delete()


# ---- light clients: raw WebSocket connections in a selector loop, one loop per worker process --------------

def set_digest(sorted_elements):
    """The protocol's digest (docs/protocol.md) of already canonical, sorted element texts."""
    if not sorted_elements:
        return hashlib.sha256(b"").hexdigest()
    return hashlib.sha256(("\n".join(sorted_elements) + "\n").encode("ascii")).hexdigest()


def frame(payload):
    """A masked client text frame (RFC 6455 5.3: every client frame is masked)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0xFF]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    keystream = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return header + mask + masked


class Conn:
    """One light gateway's connection and the state of the frame being read."""

    __slots__ = ("sock", "name", "buf", "open", "need", "in_frame", "fin", "opcode", "head", "decided", "keep",
                 "parts", "snap")

    def __init__(self, sock, name):
        self.sock, self.name = sock, name
        self.buf = bytearray()
        self.open = False        # the HTTP upgrade is done
        self.need = 0            # payload bytes of the current frame still to read
        self.in_frame = False
        self.fin = True
        self.opcode = 0
        self.head = bytearray()  # the message's first HEAD_BYTES
        self.decided = False     # whether the rest of the message is kept (decoded) or skipped
        self.keep = False
        self.parts = []
        self.snap = None         # (revision, chunk, chunks) when the message is a snapshot chunk


class LightWorker:
    """Up to a few hundred light gateways in one process; reports to the parent through a Pipe."""

    def __init__(self, port, token, names, pipe):
        self.port, self.token, self.names, self.pipe = port, token, names, pipe
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.digests = {}        # revision -> (digest, count)
        self.ref_revision, self.ref_sorted, self.ref_set = None, [], set()
        self.decoder = {}        # snapshot revision -> the Conn decoding it for the whole process
        self.chunks = {}         # snapshot revision -> decoded element lists so far
        self.waiting = {}        # snapshot revision -> Conns that hold every chunk but wait for the digest
        self.snapshot_acks = {}  # revision -> number of connections that acked a snapshot of it
        self.arrivals = {}       # element -> arrival times (time.perf_counter: CLOCK_MONOTONIC, system-wide)
        self.scratch = memoryview(bytearray(1 << 18))
        self.last_beat = time.monotonic()

    # -- plumbing
    def report(self, *msg):
        self.pipe.send(msg)

    def send(self, conn, **msg):
        msg["v"] = 1
        conn.sock.sendall(frame(json.dumps(msg, separators=(",", ":")).encode()))

    def connect(self, name):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=600)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET /ws/gateway HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                      "Authorization: Bearer %s\r\n\r\n" % (self.port, key, self.token)).encode())
        conn = Conn(sock, name)
        self.sel.register(sock, selectors.EVENT_READ, conn)
        self.conns.append(conn)

    def run(self):
        try:
            for name in self.names:
                self.connect(name)
            self.sel.register(self.pipe.fileno(), selectors.EVENT_READ, None)
            while True:
                for key, dummy in self.sel.select(timeout=1.0):
                    if key.data is None:
                        if self.pipe.recv() == "stop":
                            return self.stop()
                    else:
                        self.readable(key.data)
                if time.monotonic() - self.last_beat >= 10:
                    self.last_beat = time.monotonic()
                    for conn in self.conns:
                        if conn.open:
                            self.send(conn, type="heartbeat", ts=time.time())
        except Exception:
            self.report("error", traceback.format_exc())

    def stop(self):
        for conn in self.conns:
            try:
                conn.sock.close()
            except OSError:
                pass
        t = os.times()
        self.report("stopped", t.user + t.system)

    # -- reading
    def readable(self, conn):
        if conn.in_frame and conn.decided and not conn.keep and not conn.buf:
            # Skipping a snapshot chunk this process has already decoded: straight into a scratch buffer.
            n = conn.sock.recv_into(self.scratch, min(conn.need, len(self.scratch)))
            if not n:
                raise RuntimeError("%s: the server closed the connection" % conn.name)
            conn.need -= n
            if conn.need == 0:
                conn.in_frame = False
                if conn.fin:
                    self.message(conn, time.perf_counter())
            return
        data = conn.sock.recv(1 << 18)
        now = time.perf_counter()
        if not data:
            raise RuntimeError("%s: the server closed the connection" % conn.name)
        conn.buf += data
        if not conn.open:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(conn.buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise RuntimeError("%s: WebSocket upgrade refused: %r" % (conn.name, status))
            del conn.buf[:end + 4]
            conn.open = True
            self.send(conn, type="hello", name=conn.name, agent_version="light", revision=0)
        self.pump(conn, now)

    def pump(self, conn, now):
        buf = conn.buf
        while True:
            if not conn.in_frame:
                if len(buf) < 2:
                    return
                b0, b1 = buf[0], buf[1]
                length, offset = b1 & 0x7F, 2
                if length == 126:
                    if len(buf) < 4:
                        return
                    length, offset = int.from_bytes(buf[2:4], "big"), 4
                elif length == 127:
                    if len(buf) < 10:
                        return
                    length, offset = int.from_bytes(buf[2:10], "big"), 10
                if b1 & 0x80:
                    raise RuntimeError("%s: the server sent a masked frame" % conn.name)
                opcode = b0 & 0x0F
                if opcode >= 8:                     # control frames are whole and short
                    if len(buf) < offset + length:
                        return
                    payload = bytes(buf[offset:offset + length])
                    del buf[:offset + length]
                    self.control(conn, opcode, payload)
                    continue
                del buf[:offset]
                if opcode:                          # not a continuation: a new message starts
                    conn.opcode, conn.head, conn.decided, conn.keep, conn.parts = opcode, bytearray(), False, False, []
                conn.need, conn.fin, conn.in_frame = length, bool(b0 & 0x80), True
            take = min(conn.need, len(buf))
            used = 0
            if not conn.decided and take:
                used = min(take, HEAD_BYTES - len(conn.head))
                conn.head += buf[:used]
                if len(conn.head) >= HEAD_BYTES:
                    self.decide(conn)
            if conn.keep and take > used:
                conn.parts.append(bytes(buf[used:take]))
            del buf[:take]
            conn.need -= take
            if conn.need:
                return
            conn.in_frame = False
            if conn.fin:
                if not conn.decided:
                    self.decide(conn)
                self.message(conn, now)

    def control(self, conn, opcode, payload):
        if opcode == 0x9:
            n = len(payload)
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            conn.sock.sendall(bytes([0x8A, 0x80 | n]) + mask + masked)
        elif opcode == 0x8:
            raise RuntimeError("%s: the server closed the WebSocket: %r" % (conn.name, payload))

    def decide(self, conn):
        """Keep the message if it must be decoded: anything but a chunk of a snapshot this process knows."""
        conn.decided = True
        head = SNAPSHOT_HEAD.match(bytes(conn.head))
        if head is None:
            conn.snap, conn.keep = None, True
            return
        revision, chunk, chunks = (int(x) for x in head.groups())
        conn.snap = (revision, chunk, chunks)
        if revision in self.digests:
            conn.keep = False
        elif self.decoder.get(revision) is None and chunk == 0:
            self.decoder[revision] = conn
            conn.keep = True
        else:
            conn.keep = self.decoder.get(revision) is conn

    def message(self, conn, now):
        if conn.snap is not None:
            revision, chunk, chunks = conn.snap
            if conn.keep:
                msg = json.loads(bytes(conn.head) + b"".join(conn.parts))
                conn.parts = []
                self.chunks.setdefault(revision, []).append(msg["elements"])
                if chunk == chunks - 1:
                    elements = sorted(e for part in self.chunks.pop(revision) for e in part)
                    del self.decoder[revision]
                    if self.ref_revision is None or revision >= self.ref_revision:
                        self.ref_revision, self.ref_sorted, self.ref_set = revision, elements, set(elements)
                    self.digests[revision] = (set_digest(elements), len(elements))
                    for other in self.waiting.pop(revision, []):
                        self.ack_snapshot(other, revision)
            if chunk == chunks - 1:
                if revision in self.digests:
                    self.ack_snapshot(conn, revision)
                else:
                    self.waiting.setdefault(revision, []).append(conn)
            return
        msg = json.loads(bytes(conn.head) + b"".join(conn.parts))
        conn.parts = []
        kind = msg.get("type")
        if kind == "delta":
            for element in msg["add"]:
                times = self.arrivals.setdefault(element, [])
                times.append(now)
                if len(times) == len(self.conns):
                    self.report("arrivals", element, self.arrivals.pop(element))
            revision = msg["revision"]
            if revision not in self.digests:
                if self.ref_revision != msg["base"]:
                    raise RuntimeError("delta %d->%d but this process follows revision %s"
                                       % (msg["base"], revision, self.ref_revision))
                import bisect
                for element in msg["remove"]:
                    if element in self.ref_set:
                        self.ref_set.discard(element)
                        del self.ref_sorted[bisect.bisect_left(self.ref_sorted, element)]
                for element in msg["add"]:
                    if element not in self.ref_set:
                        self.ref_set.add(element)
                        bisect.insort(self.ref_sorted, element)
                self.ref_revision = revision
                self.digests[revision] = (set_digest(self.ref_sorted), len(self.ref_sorted))
            digest, count = self.digests[revision]
            self.send(conn, type="ack", revision=revision, digest=digest, count=count)
        elif kind == "heartbeat":
            self.send(conn, type="heartbeat", ts=time.time())
        elif kind == "error":
            raise RuntimeError("%s: the server sent %r" % (conn.name, msg))

    def ack_snapshot(self, conn, revision):
        digest, count = self.digests[revision]
        self.send(conn, type="ack", revision=revision, digest=digest, count=count)
        self.snapshot_acks[revision] = self.snapshot_acks.get(revision, 0) + 1
        if self.snapshot_acks[revision] == len(self.conns):
            t = os.times()
            self.report("snapshot", revision, len(self.conns), time.perf_counter(), t.user + t.system)


def light_worker(port, token, names, pipe):
    LightWorker(port, token, names, pipe).run()


class LightFleet:
    """The light gateways, split over worker processes; collects their reports in the parent."""

    def __init__(self, port, token, count, per_process):
        ctx = multiprocessing.get_context("fork")
        names = ["light-%04d" % i for i in range(count)]
        procs = max(1, -(-count // per_process))
        groups = [names[i::procs] for i in range(procs)]
        self.lock = threading.Lock()
        self.arrivals, self.snapshots, self.errors, self.cpu = {}, {}, [], {}
        self.workers, self.pipes = [], []
        for group in groups:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=light_worker, args=(port, token, group, theirs), daemon=True)
            proc.start()
            theirs.close()
            self.workers.append(proc)
            self.pipes.append(mine)
        self.readers = [threading.Thread(target=self._read, args=(i, pipe), daemon=True)
                        for i, pipe in enumerate(self.pipes)]
        for reader in self.readers:
            reader.start()

    def _read(self, index, pipe):
        while True:
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                return
            with self.lock:
                if msg[0] == "arrivals":
                    self.arrivals.setdefault(msg[1], []).extend(msg[2])
                elif msg[0] == "snapshot":
                    self.snapshots[index] = msg[1:]
                elif msg[0] == "stopped":
                    self.cpu[index] = msg[1]
                    return
                elif msg[0] == "error":
                    self.errors.append(msg[1])
                    return

    def check(self):
        with self.lock:
            if self.errors:
                raise SystemExit("a light-client process failed:\n" + self.errors[0])

    def wait_snapshots(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check()
            with self.lock:
                if len(self.snapshots) == len(self.workers):
                    return dict(self.snapshots)
            time.sleep(0.05)
        raise SystemExit("light clients: only %d of %d processes acked a snapshot in %ds"
                         % (len(self.snapshots), len(self.workers), timeout))

    def arrived(self, element):
        with self.lock:
            return list(self.arrivals.get(element, ()))

    def stop(self):
        for pipe in self.pipes:
            try:
                pipe.send("stop")
            except OSError:
                pass
        for reader in self.readers:
            reader.join(30)
        for proc in self.workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        return sum(self.cpu.values())


# ---- the server --------------------------------------------------------------------------------------------

SERVER_PROFILER = '''\
"""Put on og-server's PYTHONPATH by bench/propagation.py --profile-server: cProfile in every worker thread."""
import os

_PATH = os.environ.get("OG_BENCH_CPROFILE")


def _start():
    import cProfile
    import pstats
    import threading
    import time
    profiles, lock = [], threading.Lock()

    class Snap:
        def __init__(self, prof):
            self.prof = prof

        def create_stats(self):
            self.prof.snapshot_stats()   # unlike create_stats, this does not stop the profiler
            self.stats = self.prof.stats

    def dump():
        while True:
            time.sleep(10)
            with lock:
                current = list(profiles)
            stats = pstats.Stats(Snap(current[0]))
            for prof in current[1:]:
                stats.add(Snap(prof))
            stats.dump_stats(_PATH + ".tmp")
            os.replace(_PATH + ".tmp", _PATH)

    def per_thread(frame, event, arg):
        prof = cProfile.Profile(time.thread_time)   # CPU time: a thread blocked in recv or a lock costs nothing
        with lock:
            profiles.append(prof)
        prof.enable()

    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    threading.Thread(target=dump, name="og-bench-profile-dump", daemon=True).start()
    threading.setprofile(per_thread)
    main.enable()


if _PATH:
    os.register_at_fork(after_in_child=_start)   # gunicorn's worker is a fork of the master
'''


def og(conf, *args):
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "og-server"), "--config", conf]
                          + list(args), capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip()


def proc_usage(pid):
    """(CPU seconds, RSS MiB) of a process and its children (gunicorn's master and worker)."""
    pids = [pid]
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as fh:
                pids += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = rss = 0.0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            with open("/proc/%d/status" % p) as fh:
                rss += [int(line.split()[1]) for line in fh if line.startswith("VmRSS:")][0] / 1024
        except (OSError, IndexError):
            pass
    return cpu, rss


class PeakRss(threading.Thread):
    """Samples the server's RSS twice a second; peak() gives the largest since the last reset."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.top, self.done = pid, 0.0, threading.Event()

    def run(self):
        while not self.done.wait(0.5):
            self.top = max(self.top, proc_usage(self.pid)[1])

    def peak(self, reset=False):
        top = max(self.top, proc_usage(self.pid)[1])
        if reset:
            self.top = 0.0
        return top


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def load1():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def preload(conf, count):
    """Import `count` entries (11.x.y.z addresses) in batches of IMPORT_BATCH, in a separate process."""
    code = ("import sys, json\nfrom server_app import create_app\nfrom server_app.services import entries\n"
            "app = create_app(config_path=sys.argv[1])\ncount, batch = int(sys.argv[2]), int(sys.argv[3])\n"
            "with app.app_context():\n"
            "    for lo in range(0, count, batch):\n"
            "        items = [{'target': '11.%d.%d.%d' % (i >> 16 & 255, i >> 8 & 255, i & 255)}\n"
            "                 for i in range(lo, min(count, lo + batch))]\n"
            "        entries.import_entries(items, app.config['OG'], 'bench')\n")
    done = subprocess.run([sys.executable, "-c", code, conf, str(count), str(IMPORT_BATCH)], text=True,
                          capture_output=True, timeout=1800, cwd=TOP, check=False)
    if done.returncode:
        raise SystemExit(done.stderr)


def run_fleet(tmp, fleet, writes, entries, port, args):
    import requests
    import yaml
    conf = os.path.join(tmp, "server-%d-%d.yml" % (fleet, entries))
    data = os.path.join(tmp, "data-%d-%d" % (fleet, entries))
    with open(conf, "w") as fh:
        yaml.safe_dump({"listen": "127.0.0.1:%d" % port, "data_dir": data, "secret_key": "p" * 32,
                        "resolver_enabled": False, "threads": fleet + 64, "log_level": "WARNING"}, fh)
    og(conf, "db", "upgrade")
    admin = og(conf, "token", "create", "--role", "admin")
    gateway = og(conf, "token", "create", "--role", "gateway")
    url = "http://127.0.0.1:%d" % port
    headers = {"Authorization": "Bearer " + admin}
    if entries:
        preload(conf, entries)
    env = dict(os.environ)
    profile_path = None
    if args.profile_server:
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as fh:
            fh.write(SERVER_PROFILER)
        profile_path = os.path.join(tmp, "server-%d-%d.pstats" % (fleet, entries))
        env.update(PYTHONPATH=tmp + os.pathsep + env.get("PYTHONPATH", ""), OG_BENCH_CPROFILE=profile_path)
    log = open(os.path.join(tmp, "server-%d-%d.log" % (fleet, entries)), "w")
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "og-server"), "--config", conf],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    agent = lights = agent_log = None
    try:
        for dummy in range(600):
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None:
                raise SystemExit("og-server exited; see its log")
            time.sleep(0.1)
        peak = PeakRss(server.pid)
        peak.start()
        rss_idle = proc_usage(server.pid)[1]
        load_start = load1()
        cpu0, dummy = proc_usage(server.pid)
        agent_cpu0 = 0.0
        connect_started = time.perf_counter()
        # The real agent.
        token_file = os.path.join(tmp, "gw.token")
        with open(token_file, "w") as fh:
            fh.write(gateway)
        agent_log = open(os.path.join(tmp, "agent-%d-%d.log" % (fleet, entries)), "w")
        agent = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "og-gateway-agent"), "--server",
             "ws://127.0.0.1:%d/ws/gateway" % port, "--token-file", token_file, "--name", "real-agent",
             "--client-network", "10.88.0.0/24", "--outside-interface", "og-out", "--state-file",
             os.path.join(tmp, "state-%d-%d.json" % (fleet, entries)), "--metrics-listen",
             "127.0.0.1:%d" % (port + 1), "--log-level", "info"], stdout=agent_log, stderr=subprocess.STDOUT)
        lights_acked_s = 0.0
        client_cpu_connect = 0.0
        if fleet > 1:
            lights = LightFleet(port, gateway, fleet - 1, args.clients_per_process)
            reports = lights.wait_snapshots(3600)
            lights_acked_s = max(r[2] for r in reports.values()) - connect_started
            client_cpu_connect = sum(r[3] for r in reports.values())
        deadline = time.time() + 1800
        gws = []
        while time.time() < deadline:
            if lights is not None:
                lights.check()
            gws = requests.get(url + "/api/v1/gateways", headers=headers, timeout=60).json()["items"]
            if len(gws) == fleet and all(g["connected"] and g["lag"] == 0 and g["digest_match"] for g in gws):
                break
            time.sleep(0.2)
        else:
            bad = [g for g in gws if not (g["connected"] and g["lag"] == 0 and g["digest_match"])]
            raise SystemExit("%d of %d gateways not in sync after 1800 s, e.g. %r" % (len(bad), fleet, bad[:3]))
        connect_seconds = time.perf_counter() - connect_started
        cpu1, rss_connected = proc_usage(server.pid)
        agent_cpu1 = proc_usage(agent.pid)[0]
        rss_connect_peak = peak.peak(reset=True)
        # Writes, one after another; latency per gateway = arrival - the moment before the POST.
        latencies, agent_latencies = [], []
        writes_started = time.perf_counter()
        for w in range(writes):
            target = "198.51.%d.%d" % (100 + w // 200, w % 200 + 1)
            element = target + "/32"
            t0 = time.perf_counter()
            response = requests.post(url + "/api/v1/entries", json={"target": target}, headers=headers, timeout=60)
            assert response.status_code == 201, response.text
            while subprocess.run(["ipset", "test", "og-allow4", target], capture_output=True, check=False).returncode:
                time.sleep(0.002)
                if time.perf_counter() - t0 > 60:
                    raise SystemExit("the real agent never got %s" % target)
            agent_latencies.append(time.perf_counter() - t0)
            arrived = []
            if lights is not None:
                wait_until = time.perf_counter() + 60
                while True:
                    lights.check()
                    arrived = lights.arrived(element)
                    if len(arrived) >= fleet - 1 or time.perf_counter() > wait_until:
                        break
                    time.sleep(0.002)
                if len(arrived) < fleet - 1:
                    raise SystemExit("write %s reached %d of %d light gateways in 60 s"
                                     % (target, len(arrived), fleet - 1))
            latencies += [t - t0 for t in arrived]
            latencies.append(agent_latencies[-1])
        writes_seconds = time.perf_counter() - writes_started
        agent_log.flush()
        with open(agent_log.name) as fh:  # the agent's own time per delta, from frame to ack (its log)
            applies = [float(m.group(1)) for m in APPLIED_DELTA.finditer(fh.read())]
        cpu2, rss_end = proc_usage(server.pid)
        agent_cpu2 = proc_usage(agent.pid)[0]
        rss_writes_peak = peak.peak()
        peak.done.set()
        client_cpu = 0.0
        if lights is not None:
            client_cpu = lights.stop()
            lights = None
        if profile_path:
            time.sleep(11)   # the profiler in the server writes its file every 10 s
        return {"fleet": fleet, "entries": entries, "writes": writes, "samples": len(latencies),
                "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
                "agent_p50": statistics.median(agent_latencies), "agent_p99": percentile(agent_latencies, 99),
                "apply_p50": statistics.median(applies) if applies else 0.0,
                "apply_p99": percentile(applies, 99) if applies else 0.0, "applies": len(applies),
                "agent_ms": [round(x * 1000) for x in agent_latencies], "apply_ms": [round(x * 1000) for x in applies],
                "lights_acked_s": lights_acked_s, "connect_s": connect_seconds, "writes_s": writes_seconds,
                "cpu_connect_s": cpu1 - cpu0, "cpu_writes_s": cpu2 - cpu1,
                "agent_cpu_connect_s": agent_cpu1 - agent_cpu0, "agent_cpu_writes_s": agent_cpu2 - agent_cpu1,
                "rss_idle_mb": rss_idle,
                "rss_mb": rss_connected, "rss_connect_peak_mb": rss_connect_peak, "rss_end_mb": rss_end,
                "rss_writes_peak_mb": rss_writes_peak, "client_cpu_connect_s": client_cpu_connect,
                "client_cpu_s": client_cpu, "client_procs": 0 if fleet == 1 else
                -(-(fleet - 1) // args.clients_per_process), "load_start": load_start, "load_end": load1(),
                "profile": profile_path}
    except BaseException:
        log.flush()
        with open(log.name) as fh:
            print("og-server's log ends with:\n" + "".join(fh.readlines()[-40:]), file=sys.stderr)
        if agent_log is not None:
            agent_log.flush()
            with open(agent_log.name) as fh:
                print("the real agent's log ends with:\n" + "".join(fh.readlines()[-40:]), file=sys.stderr)
        raise
    finally:
        if lights is not None:
            lights.stop()
        for proc in (agent, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def print_profile(path, top=25):
    import pstats
    if not path or not os.path.exists(path):
        print("(no server profile was written)")
        return
    print("og-server worker under cProfile (CPU time of all its threads, sorted by own time; cProfile slows"
          " Python code, so only the proportions mean something):")
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def inside(args):
    from og_kernel.og_command import in_root_netns
    if in_root_netns():
        raise SystemExit("refusing to run in the machine's root network namespace")
    results = []
    print("propagation from POST /api/v1/entries to every gateway (light clients' receipt of the delta; the real "
          "agent's kernel set via ipset test), og-server with one gthread worker, SQLite; light clients in "
          "processes of up to %d connections" % args.clients_per_process, flush=True)
    print("%8s %7s %6s %8s %8s %9s %9s %6s %9s %9s %7s %8s %8s %8s %9s %8s %8s %8s %9s %9s %7s" % (
        "gateways", "entries", "writes", "p50 ms", "p99 ms", "agent p50", "agent p99", "p99/1", "apply p50",
        "apply p99", "agent/0", "acked s", "synced s", "cpu conn", "cpu writes", "RSS MB", "RSS peak", "writes s",
        "client cpu", "agent cpu", "load1"), flush=True)

    def row(r):
        base = [x for x in results if x["entries"] == r["entries"]][0]
        # The real agent's p99 against the same fleet's with an empty allowlist in this run (when there is one).
        empty = [x for x in results if x["entries"] == 0 and x["fleet"] == r["fleet"]] or [r]
        print(("%8d %7d %6d %8.1f %8.1f %9.1f %9.1f %6.1f %9.1f %9.1f %7.1f %8.1f %8.1f %8.1f %9.1f %8.0f %8.0f"
               " %8.1f %9.1f %9.1f %7.2f") % (
            r["fleet"], r["entries"], r["writes"], r["p50"] * 1000, r["p99"] * 1000, r["agent_p50"] * 1000,
            r["agent_p99"] * 1000, r["p99"] / base["p99"], r["apply_p50"] * 1000, r["apply_p99"] * 1000,
            r["agent_p99"] / empty[0]["agent_p99"], r["lights_acked_s"], r["connect_s"], r["cpu_connect_s"],
            r["cpu_writes_s"], r["rss_mb"], max(r["rss_connect_peak_mb"], r["rss_writes_peak_mb"]), r["writes_s"],
            r["client_cpu_s"], r["agent_cpu_writes_s"], r["load_start"]), flush=True)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}),
              file=sys.stderr, flush=True)

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(int(x), 0) for x in args.fleets.split(",") if x]
        if args.big_entries:
            runs += [(int(x), args.big_entries) for x in args.big_fleets.split(",") if x]
        for fleet, entries in runs:
            writes = args.writes if not entries else max(10, args.writes // 2)
            print("propagation: %d gateways, %d entries ..." % (fleet, entries), file=sys.stderr, flush=True)
            results.append(run_fleet(tmp, fleet, writes, entries, free_port(), args))
            row(results[-1])
        if args.profile_server:
            for r in results:
                print("\n%d gateways, %d entries:" % (r["fleet"], r["entries"]))
                print_profile(r["profile"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--fleets", default="1,100,1000", help="gateway counts with an empty allowlist")
    parser.add_argument("--writes", type=int, default=40, help="writes per run (half of it with --big-entries)")
    parser.add_argument("--big-entries", type=int, default=100000,
                        help="entries preloaded for the second part (0: skip it)")
    parser.add_argument("--big-fleets", default="1,1000", help="gateway counts with --big-entries entries")
    parser.add_argument("--clients-per-process", type=int, default=250,
                        help="light gateways per client process")
    parser.add_argument("--profile-server", action="store_true",
                        help="run og-server under cProfile (slower) and print its top functions")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for option in ("fleets", "big_fleets"):
        value = getattr(args, option)
        if not re.fullmatch(r"(\d+)(,\d+)*", value) or 0 in [int(x) for x in value.split(",")]:
            parser.error("--%s must be gateway counts above 0 separated by commas, e.g. 1,100,1000; got %r"
                         % (option.replace("_", "-"), value))
    if args.clients_per_process < 1 or args.writes < 1 or args.big_entries < 0:
        parser.error("--clients-per-process and --writes must be at least 1 and --big-entries at least 0")
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        raise SystemExit("bench/propagation.py: run as root (it creates a network namespace)")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
