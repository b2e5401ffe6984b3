"""The forwarder's measured claim (issue 13): the same rotating name, central resolver only versus og-dns, in one run.

Namespaces (prefix $OG_TEST_PREFIX + "b"): client 10.88.0.2 -> gateway (10.88.0.1 | og-out 203.0.113.2, the real
policy of og_kernel.og_firewall: Firewall.apply(), allow sets, learn sets, OG-REJECT with tcp-reset, MASQUERADE)
-> "internet" namespace holding the test's authoritative server (tests/support/dnsauth.py) on 198.51.100.53 and
the pool addresses 192.0.2.100-131 on its loopback, with one TCP listener on 0.0.0.0:PORT for all of them.

The name rotN.bench answers 2 addresses drawn at random from a pool of N (8 and 32) on every query, TTL 20 s:
a name behind a CDN, where every asker (the server's resolver, each client) gets an answer of its own.

Mode central: the gateway's allow set is filled the way og-server's resolver does it. The resolving is the
resolver's own code (server_app.services.resolver.make_dns, resolve and Resolver.delay_for, run without a
server: no database, no change log); applying an answer reproduces Resolver.apply's policy: a new address is
published at once (Firewall.update, what the agent does with the change), an address no longer in the answer is
kept for resolve_grace (900 s) and only then removed, the next pass comes after max(resolve_min_interval 5,
min(resolve_interval 60, TTL)) = 20 s. The entry is resolved once before the clients start (an entry created
through the API is resolved in the request). The client asks the authoritative server directly; the server
for its DNS traffic (198.51.100.53) is in the allow set.

Mode forwarder: the client asks og-dns on the gateway (10.88.0.1:53, upstream 198.51.100.53, the name an
entry), which learns every answered address into og-learn4 before it answers.

Each mode: N connections (--connections, default 10,000) spread over --seconds, up to --concurrency at a
time; each resolves the name (UDP, dnspython) and connects at once to the first address of its answer.
Counted: connected, refused (RST from OG-REJECT), timed out, DNS failures; and the DNS time of every query
(central: the upstream directly; forwarder: through og-dns, so the difference is og-dns's added latency, its
learning included). og-dns runs on CPU 0 by itself, everything else of the benchmark on CPU 1 (taskset).

    sudo .venv/bin/python bench/dns_vs_central.py [--connections 10000] [--seconds 60] [--pools 8,32] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchlib  # noqa: E402
from tests.support import nslib  # noqa: E402

UPSTREAM = "198.51.100.53"
GATEWAY = "10.88.0.1"
PORT = 8080
TTL = 20
POOL = ["192.0.2.%d" % n for n in range(100, 132)]
# og-dns on a core of its own, everything else (clients, dnsauth, listener, central resolver) on the other, so
# that the added latency is og-dns's and not its neighbours' (on one CPU nothing is pinned).
PINNED = (os.cpu_count() or 1) >= 2
OG_DNS_CPU = ["taskset", "-c", "0"] if PINNED else []
OTHERS = ["taskset", "-c", "1"] if PINNED else []
CENTRAL_CFG = {"dns_servers": [UPSTREAM], "dns_timeout": 2.0, "dns_tries": 2, "resolve_interval": 60,
               "resolve_min_interval": 5, "resolve_grace": 900}


def name_of(pool):
    return "rot%d.bench" % pool


def zone(pools):
    return {name_of(p): {"A": {"ttl": TTL, "pool": POOL[:p], "pick": 2, "random": True}} for p in pools}


# ---- workers (inside a namespace) -------------------------------------------------------------------------
def op_firewall():
    """Gateway: the product's policy, the allow set holding only the DNS server."""
    fw = benchlib.firewall()
    fw.apply()
    fw.replace([UPSTREAM])
    return {"ok": True}


def op_reset():
    """Gateway: back to the DNS server alone in the allow set, learn sets empty."""
    fw = benchlib.firewall()
    fw.replace([UPSTREAM])
    for name in ("og-learn4", "og-learnp4"):
        subprocess.run(["ipset", "flush", name], check=True)
    return {"ok": True}


def op_count():
    """Gateway: members of the allow set and of the learn set."""
    run = benchlib.TimedRunner()
    return {"allow": benchlib.set_size(run, "og-allow4"), "learn": benchlib.set_size(run, "og-learn4")}


def op_central(name, seconds):
    """Gateway: the central resolver's loop for `seconds` (see the module's docstring); prints "central: ready"
    on stderr after the first pass is in the allow set."""
    from server_app.services import resolver

    res = resolver.make_dns(CENTRAL_CFG)
    timing = resolver.Resolver.__new__(resolver.Resolver)  # only delay_for, which reads cfg alone
    timing.cfg = CENTRAL_CFG
    fw = benchlib.firewall()
    known = {}  # address -> grace deadline (None while in the answer)
    passes, added, removed = 0, 0, 0
    stop = time.monotonic() + seconds
    while True:
        answer = resolver.resolve(res, name, aaaa=False)
        now = time.monotonic()
        passes += 1
        if answer.status == "ok":
            current = {str(a) for a in answer.addresses}
            new = sorted(a for a in current if a not in known)
            if new:
                fw.update(add=new)
                added += len(new)
            for a in current:
                known[a] = None
            for a, deadline in list(known.items()):
                if a in current:
                    continue
                if deadline is None:
                    known[a] = now + CENTRAL_CFG["resolve_grace"]
                elif deadline <= now:
                    fw.update(remove=[a])
                    del known[a]
                    removed += 1
        if passes == 1:
            sys.stderr.write("central: ready\n")
            sys.stderr.flush()
        delay = timing.delay_for(answer)
        deadlines = [d for d in known.values() if d is not None]
        wake = min([now + delay] + deadlines)
        if wake >= stop:
            break
        time.sleep(max(0.0, wake - time.monotonic()))
    return {"passes": passes, "added": added, "removed": removed, "known": len(known)}


def op_clients(server, name, count, seconds, concurrency):
    """Client: `count` resolve-then-connect attempts, started evenly over `seconds`."""
    import dns.message
    import dns.query
    import dns.rdatatype

    counts = {"connected": 0, "refused": 0, "timeout": 0, "dns_failed": 0, "other": 0}
    dns_times = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    step = seconds / float(count)

    def one(i):
        delay = start + i * step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        query = dns.message.make_query(name, "A")
        t0 = time.perf_counter()
        try:
            reply = dns.query.udp(query, server, timeout=2.0)
            took = time.perf_counter() - t0
            addresses = [r.address for rr in reply.answer if rr.rdtype == dns.rdatatype.A for r in rr]
            if not addresses:
                raise RuntimeError("no address in the answer")
        except Exception:  # a lost or empty answer: counted, the run goes on
            with lock:
                counts["dns_failed"] += 1
            return
        try:
            with socket.create_connection((addresses[0], PORT), timeout=2.0):
                outcome = "connected"
        except ConnectionRefusedError:
            outcome = "refused"
        except socket.timeout:
            outcome = "timeout"
        except OSError:
            outcome = "other"
        with lock:
            counts[outcome] += 1
            dns_times.append(took)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    counts["wall"] = time.monotonic() - t0
    counts["dns_p50"] = benchlib.percentile(dns_times, 0.5)
    counts["dns_p99"] = benchlib.percentile(dns_times, 0.99)
    return counts


OPS = {"firewall": op_firewall, "reset": op_reset, "count": op_count, "central": op_central,
       "clients": op_clients}

LISTENER = ("import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', %d)); s.listen(4096)\n"
            "while True:\n"
            "    s.accept()[0].close()\n" % PORT)


# ---- orchestrator -----------------------------------------------------------------------------------------
def build(spaces, tmp, pools):
    client, gw, inet = benchlib.three_hosts(spaces, "d")
    inet.ip("addr", "add", UPSTREAM + "/32", "dev", "lo")
    for address in POOL[:max(pools)]:
        inet.ip("addr", "add", address + "/32", "dev", "lo")
    procs = []
    zone_path = os.path.join(tmp, "zone.json")
    with open(zone_path, "w") as fh:
        json.dump(zone(pools), fh)
    log = os.path.join(tmp, "dnsauth.log")
    auth = inet.popen(OTHERS + [sys.executable, "-m", "tests.support.dnsauth", "--zone", zone_path,
                                "--listen", UPSTREAM],
                      cwd=benchlib.TOP, stderr=open(log, "w"))
    procs.append(auth)
    nslib.wait_ready(lambda: "dnsauth: ready" in open(log).read(), auth, "dnsauth", log)
    procs.append(inet.popen(OTHERS + [sys.executable, "-c", LISTENER]))
    benchlib.worker(gw, __file__, "firewall")
    with open(os.path.join(tmp, "domains.json"), "w") as fh:
        json.dump({"revision": 1, "domains": [{"entry": i + 1, "name": name_of(p), "ports": []}
                                              for i, p in enumerate(pools)]}, fh)
    with open(os.path.join(tmp, "dns.yml"), "w") as fh:
        json.dump({"listen": [GATEWAY], "upstreams": [UPSTREAM], "domains_file": os.path.join(tmp, "domains.json"),
                   "spool_dir": os.path.join(tmp, "spool"), "metrics_listen": "127.0.0.1:9901",
                   "name": "bench"}, fh)
    log = os.path.join(tmp, "og-dns.log")
    dnsd = gw.popen(OG_DNS_CPU + [os.path.join(benchlib.TOP, ".venv", "bin", "og-dns"),
                                  "--config", os.path.join(tmp, "dns.yml")],
                    stderr=open(log, "w"))
    procs.append(dnsd)
    nslib.wait_ready(lambda: "og-dns: ready" in open(log).read(), dnsd, "og-dns", log)
    return client, gw, inet, procs


def central_process(gw, name, seconds, tmp):
    """The central resolver loop, started in the gateway namespace; returns (process, its log path)."""
    env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1", PYTHONPATH=benchlib.TOP + os.pathsep + benchlib.BENCH)
    log = os.path.join(tmp, "central-%s.log" % name)
    argv = OTHERS + [sys.executable, os.path.abspath(__file__), "--inside", "central",
                     json.dumps({"name": name, "seconds": seconds})]
    proc = subprocess.Popen(["ip", "netns", "exec", gw.name] + argv,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)
    nslib.wait_ready(lambda: "central: ready" in open(log).read(), proc, "central resolver", log)
    return proc, log


def measure(a, tmp):
    spaces = benchlib.Namespaces()
    procs = []
    results = []
    try:
        client, gw, inet, procs = build(spaces, tmp, a.pools)
        for pool in a.pools:
            name = name_of(pool)
            for mode in ("central", "forwarder"):
                benchlib.worker(gw, __file__, "reset")
                central = None
                if mode == "central":
                    central, clog = central_process(gw, name, a.seconds + 2, tmp)
                server = UPSTREAM if mode == "central" else GATEWAY
                benchlib.log("%s, %s: %d connections over %g s" % (name, mode, a.connections, a.seconds))
                row = benchlib.worker(client, __file__, "clients",
                                      {"server": server, "name": name, "count": a.connections,
                                       "seconds": a.seconds, "concurrency": a.concurrency}, timeout=a.seconds + 600,
                                      cpus=OTHERS[-1] if OTHERS else None)
                row.update(benchlib.worker(gw, __file__, "count"))
                if central is not None:
                    out, dummy = central.communicate(timeout=a.seconds + 120)
                    if central.returncode != 0:
                        raise RuntimeError("central resolver failed (rc=%d); see %s" % (central.returncode, clog))
                    row["central"] = json.loads(out.strip().splitlines()[-1])
                row.update({"pool": pool, "mode": mode})
                results.append(row)
                benchlib.log("  %r" % row)
    finally:
        benchlib.stop_processes(procs)
        spaces.close()
    return results


def ms(seconds):
    return "-" if seconds is None else "%.3f" % (seconds * 1000)


def render(a, results, load_start, load_end):
    commit = subprocess.run(["git", "-C", benchlib.TOP, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    head = ("`bench/dns_vs_central.py --connections %d --seconds %g --concurrency %d --pools %s` at %s on %s CPUs "
            "(nproc), kernel %s, Python %s; load average %s at the start, %s at the end (a shared machine); %s.\n"
            % (a.connections, a.seconds, a.concurrency, ",".join(map(str, a.pools)), commit, os.cpu_count(),
               platform.release(), platform.python_version(), " ".join(load_start), " ".join(load_end),
               "og-dns pinned to CPU 0, the rest to CPU 1" if PINNED else "nothing pinned (one CPU)"))
    rows = []
    direct = {r["pool"]: r for r in results if r["mode"] == "central"}
    for r in results:
        tried = r["connected"] + r["refused"] + r["timeout"] + r["other"]
        failed = r["refused"] + r["timeout"] + r["other"]
        base = direct.get(r["pool"])
        if r["mode"] == "forwarder" and base and base["dns_p50"] is not None and r["dns_p50"] is not None:
            added = "%s / %s" % (ms(r["dns_p50"] - base["dns_p50"]), ms(r["dns_p99"] - base["dns_p99"]))
            ratio = benchlib.fmt_ratio(r["dns_p99"] / base["dns_p99"])
        else:
            added, ratio = "-", "-"
        if r["mode"] == "central":
            kept = "%d in allow set (%d passes)" % (r["allow"] - 1, r["central"]["passes"])
        else:
            kept = "%d in og-learn4" % r["learn"]
        rows.append(["2 of %d" % r["pool"], r["mode"], tried, r["connected"], r["refused"],
                     r["timeout"] + r["other"], r["dns_failed"],
                     "%.2f %%" % (100.0 * failed / tried if tried else 0.0),
                     ms(r["dns_p50"]), ms(r["dns_p99"]), added, ratio, kept])
    return head + "\n" + benchlib.table(
        ["answer", "mode", "connections", "connected", "refused", "timed out", "DNS failed", "not connected",
         "DNS p50 ms", "DNS p99 ms", "added p50 / p99 ms", "p99 via / direct", "addresses let through"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=60.0, help="spread each mode's connections over this")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pools", default="8,32", help="pool sizes, comma-separated (answers pick 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--inside", nargs=2, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.inside:
        benchlib.worker_main(OPS)
        return
    a.pools = [int(p) for p in a.pools.split(",")]
    if max(a.pools) > len(POOL) or min(a.pools) < 2:
        parser.error("--pools: each between 2 and %d" % len(POOL))
    load_start = open("/proc/loadavg").read().split()[:3]
    tmp = tempfile.mkdtemp(prefix="og-dns-vs-central-")
    results = measure(a, tmp)
    load_end = open("/proc/loadavg").read().split()[:3]
    if a.json:
        print(json.dumps({"args": vars(a), "load_start": load_start, "load_end": load_end, "nproc": os.cpu_count(),
                          "kernel": platform.release(), "results": results}, indent=1))
    else:
        print(render(a, results, load_start, load_end))


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    random.seed()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
