"""Propagation latency: from an API write to every gateway, with 1, 100 and 1,000 connected gateways.

One real og-gateway-agent (its kernel set is polled with `ipset test`) and N-1 light protocol clients that
speak docs/protocol.md and ack with correct digests (they share one reference copy of the set, since they all
follow the same stream). Everything runs inside one network namespace (ogt-bprop) that this script creates
and removes: og-server on its 127.0.0.1, the agent with a veth as its outside interface. The baseline is the
run with 1 gateway; the ratios show how latency grows with the fleet. A last run measures the server's
memory and CPU with 1,000 gateways and 100,000 entries.

    .venv/bin/python bench/propagation.py [--fleets 1,100,1000] [--writes 40] [--big-entries 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(TOP, "tests"))
NS = "ogt-bprop"
SNAPSHOT_HEAD = __import__("re").compile(r'^\{"type":"snapshot","revision":(\d+),"chunk":(\d+),"chunks":(\d+),')


def orchestrate(args):
    import nslib
    ns = nslib.Netns(NS)
    try:
        ns.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
        ns.ip("link", "set", "og-out", "up")
        ns.ip("link", "set", "og-peer", "up")
        env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1")
        proc = subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inside"] + sys.argv[1:],
                              env=env, timeout=3600)
        return proc.returncode
    finally:
        ns.delete()


# ---- inside the namespace ---------------------------------------------------------------------------

class Shared:
    """The reference set all light clients follow: digest per revision, computed once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.elements = set()
        self.revision = None
        self.digests = {}

    def snapshot(self, revision, elements):
        from og_kernel.og_elements import digest
        with self.lock:
            if revision not in self.digests:
                if self.revision is None or revision >= self.revision:
                    self.elements, self.revision = set(elements), revision
                self.digests[revision] = (digest(elements), len(elements))
            return self.digests[revision]

    def delta(self, base, revision, add, remove):
        from og_kernel.og_elements import digest
        with self.lock:
            if revision not in self.digests:
                assert self.revision == base, (self.revision, base, revision)
                self.elements = (self.elements - set(remove)) | set(add)
                self.revision = revision
                self.digests[revision] = (digest(self.elements), len(self.elements))
            return self.digests[revision]


class Light(threading.Thread):
    def __init__(self, url, token, name, shared, arrivals):
        super().__init__(daemon=True)
        import websocket
        self.ws = websocket.create_connection(url, timeout=600, header=["Authorization: Bearer " + token])
        self.name, self.shared, self.arrivals = name, shared, arrivals
        self.ready = threading.Event()
        self.stop = False

    def send(self, **msg):
        msg["v"] = 1
        self.ws.send(json.dumps(msg))

    def run(self):
        self.send(type="hello", name=self.name, agent_version="light", revision=0)
        chunks = []
        try:
            while not self.stop:
                raw = self.ws.recv()
                now = time.perf_counter()
                head = SNAPSHOT_HEAD.match(raw)
                if head:
                    # The same snapshot text goes to every gateway: once one light client has parsed this
                    # revision, the others only need its digest (the benchmark must not be slower than the server).
                    revision, chunk, count = (int(x) for x in head.groups())
                    known = self.shared.digests.get(revision)
                    if known is not None:
                        if chunk == count - 1:
                            self.send(type="ack", revision=revision, digest=known[0], count=known[1])
                            self.ready.set()
                        continue
                msg = json.loads(raw)
                if msg["type"] == "snapshot":
                    chunks.append(msg["elements"])
                    if msg["chunk"] == msg["chunks"] - 1:
                        elements = [e for c in chunks for e in c]
                        chunks = []
                        d, n = self.shared.snapshot(msg["revision"], elements)
                        self.send(type="ack", revision=msg["revision"], digest=d, count=n)
                        self.ready.set()
                elif msg["type"] == "delta":
                    for element in msg["add"]:
                        self.arrivals.setdefault(element, []).append(now)
                    d, n = self.shared.delta(msg["base"], msg["revision"], msg["add"], msg["remove"])
                    self.send(type="ack", revision=msg["revision"], digest=d, count=n)
                elif msg["type"] == "heartbeat":
                    self.send(type="heartbeat", ts=time.time())
        except Exception:
            pass


def og(conf, *args):
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "og-server"), "--config", conf]
                          + list(args), capture_output=True, text=True, timeout=600)
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


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def run_fleet(tmp, fleet, writes, entries, port):
    import requests
    import yaml
    conf = os.path.join(tmp, "server-%d.yml" % fleet)
    data = os.path.join(tmp, "data-%d" % fleet)
    with open(conf, "w") as fh:
        yaml.safe_dump({"listen": "127.0.0.1:%d" % port, "data_dir": data, "secret_key": "p" * 32,
                        "resolver_enabled": False, "threads": fleet + 64, "log_level": "WARNING"}, fh)
    og(conf, "db", "upgrade")
    admin = og(conf, "token", "create", "--role", "admin")
    gateway = og(conf, "token", "create", "--role", "gateway")
    url = "http://127.0.0.1:%d" % port
    headers = {"Authorization": "Bearer " + admin}
    if entries:
        items = [{"target": "11.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)} for i in range(entries)]
        srv_import = subprocess.run(
            [sys.executable, "-c", "import sys, json\nfrom server_app import create_app\n"
             "from server_app.services import entries\napp = create_app(config_path=sys.argv[1])\n"
             "with app.app_context():\n    entries.import_entries(json.load(sys.stdin), app.config['OG'], 'bench')",
             conf], input=json.dumps(items), text=True, capture_output=True, timeout=900)
        if srv_import.returncode:
            raise SystemExit(srv_import.stderr)
    log = open(os.path.join(tmp, "server-%d.log" % fleet), "w")
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "og-server"), "--config", conf],
                              stdout=log, stderr=subprocess.STDOUT)
    agent = None
    lights = []
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        # The real agent.
        token_file = os.path.join(tmp, "gw.token")
        with open(token_file, "w") as fh:
            fh.write(gateway)
        agent_log = open(os.path.join(tmp, "agent-%d.log" % fleet), "w")
        agent = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "og-gateway-agent"), "--server",
             "ws://127.0.0.1:%d/ws/gateway" % port, "--token-file", token_file, "--name", "real-agent",
             "--client-network", "10.88.0.0/24", "--outside-interface", "og-out", "--state-file",
             os.path.join(tmp, "state-%d.json" % fleet), "--metrics-listen", "127.0.0.1:%d" % (port + 1),
             "--log-level", "warning"], stdout=agent_log, stderr=subprocess.STDOUT)
        shared, arrivals = Shared(), {}
        connect_started = time.perf_counter()
        cpu0, _ = proc_usage(server.pid)
        for i in range(fleet - 1):
            light = Light("ws://127.0.0.1:%d/ws/gateway" % port, gateway, "light-%04d" % i, shared, arrivals)
            light.start()
            lights.append(light)
        for light in lights:
            light.ready.wait(900)
        deadline = time.time() + 120
        while time.time() < deadline:
            gws = requests.get(url + "/api/v1/gateways", headers=headers, timeout=30).json()["items"]
            if len(gws) == fleet and all(g["connected"] and g["lag"] == 0 for g in gws):
                break
            time.sleep(0.2)
        connect_seconds = time.perf_counter() - connect_started
        cpu1, rss_connected = proc_usage(server.pid)
        # Writes, one after another; latency per gateway = arrival - the moment before the POST.
        latencies, agent_latencies = [], []
        for w in range(writes):
            target = "198.51.%d.%d" % (100 + w // 200, w % 200 + 1)
            element = target + "/32"
            t0 = time.perf_counter()
            response = requests.post(url + "/api/v1/entries", json={"target": target}, headers=headers, timeout=30)
            assert response.status_code == 201, response.text
            while subprocess.run(["ipset", "test", "og-allow4", target], capture_output=True).returncode:
                time.sleep(0.002)
                if time.perf_counter() - t0 > 30:
                    raise SystemExit("the real agent never got %s" % target)
            agent_latencies.append(time.perf_counter() - t0)
            wait_until = time.perf_counter() + 30
            while len(arrivals.get(element, [])) < fleet - 1 and time.perf_counter() < wait_until:
                time.sleep(0.002)
            latencies += [t - t0 for t in arrivals.get(element, [])]
            latencies.append(agent_latencies[-1])
        cpu2, rss_end = proc_usage(server.pid)
        return {"fleet": fleet, "entries": entries, "writes": writes, "samples": len(latencies),
                "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
                "agent_p50": statistics.median(agent_latencies), "agent_p99": percentile(agent_latencies, 99),
                "connect_s": connect_seconds, "cpu_connect_s": cpu1 - cpu0, "cpu_writes_s": cpu2 - cpu1,
                "rss_mb": max(rss_connected, rss_end)}
    finally:
        for light in lights:
            light.stop = True
            try:
                light.ws.close()
            except Exception:
                pass
        for proc in (agent, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def inside(args):
    from og_kernel.og_command import in_root_netns
    if in_root_netns():
        raise SystemExit("refusing to run in the machine's root network namespace")
    import socket
    results = []
    print("propagation from POST /api/v1/entries to every gateway (light clients' receipt of the delta; the real "
          "agent's kernel set via ipset test), og-server with one gthread worker, SQLite", flush=True)
    print("%8s %8s %7s %9s %9s %10s %10s %6s %10s %10s %11s %8s" % (
        "gateways", "entries", "writes", "p50 ms", "p99 ms", "agent p50", "agent p99", "p99/1",
        "connect s", "cpu conn s", "cpu writes s", "RSS MB"), flush=True)

    def row(r):
        print("%8d %8d %7d %9.1f %9.1f %10.1f %10.1f %6.1f %10.1f %10.1f %11.1f %8.0f" % (
            r["fleet"], r["entries"], r["writes"], r["p50"] * 1000, r["p99"] * 1000, r["agent_p50"] * 1000,
            r["agent_p99"] * 1000, r["p99"] / results[0]["p99"], r["connect_s"], r["cpu_connect_s"],
            r["cpu_writes_s"], r["rss_mb"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for fleet in [int(x) for x in args.fleets.split(",")]:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            print("propagation: %d gateways ..." % fleet, file=sys.stderr, flush=True)
            results.append(run_fleet(tmp, fleet, args.writes, 0, port))
            row(results[-1])
        if args.big_entries:
            big = max(int(x) for x in args.fleets.split(","))
            print("propagation: %d gateways with %d entries ..." % (big, args.big_entries), file=sys.stderr,
                  flush=True)
            results.append(run_fleet(tmp, big, max(10, args.writes // 4), args.big_entries, port + 7))
            row(results[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleets", default="1,100,1000")
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--big-entries", type=int, default=100000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        raise SystemExit("bench/propagation.py: run as root (it creates a network namespace)")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
