"""og-dns's cost: the latency it adds to a query (p50/p99 against asking the upstream directly) and the queries
per second it answers on one core.

One namespace (ogt-b*): dnsmasq as the upstream on 127.0.0.53:53 (fixed answers, --address), og-dns on
127.0.0.1:53 pinned to CPU 0 (taskset), the learn sets made in the namespace, and a client worker on CPU 1.
Names: plain.bench (of no entry: forwarded untouched) and learn.bench (an entry: every answer is learned).

    .venv/bin/python bench/dns_forwarder.py [--queries 2000] [--seconds 5] [--inflight 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import dns.asyncquery
import dns.message
import dns.query

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchlib  # noqa: E402
from tests.support import nslib  # noqa: E402

UPSTREAM, FORWARDER = "127.0.0.53", "127.0.0.1"
NAMES = ("plain.bench", "learn.bench")


def latency(args):
    """{name: {direct: [s], via: [s]}}: sequential queries, direct and through og-dns in turn."""
    out = {}
    for name in NAMES:
        q = dns.message.make_query(name, "A")
        times = {"direct": [], "via": []}
        for i in range(args["queries"]):
            for where, server in (("direct", UPSTREAM), ("via", FORWARDER)):
                t0 = time.perf_counter()
                dns.query.udp(q, server, timeout=2.0)
                times[where].append(time.perf_counter() - t0)
        out[name] = times
    return out


async def flood(server, name, seconds, inflight):
    q = dns.message.make_query(name, "A")
    done, failed = 0, 0
    deadline = time.monotonic() + seconds

    async def one():
        nonlocal done, failed
        while time.monotonic() < deadline:
            try:
                await dns.asyncquery.udp(q, server, timeout=2.0)
                done += 1
            except Exception:  # a lost query counts as failed, the run goes on
                failed += 1
    t0 = time.monotonic()
    await asyncio.gather(*(one() for dummy in range(inflight)))
    return done / (time.monotonic() - t0), failed


def inside(args):
    benchlib.refuse_root_namespace()
    result = {"latency": latency(args), "qps": {}}
    for name in NAMES:
        for where, server in (("direct", UPSTREAM), ("via", FORWARDER)):
            result["qps"]["%s %s" % (name, where)] = asyncio.run(flood(server, name, args["seconds"],
                                                                       args["inflight"]))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.inside:
        print(json.dumps(inside(json.loads(a.inside))))
        return
    spaces = benchlib.Namespaces()
    procs = []
    tmp = tempfile.mkdtemp(prefix="og-dns-bench-")
    try:
        ns = spaces.make("dns")
        for set_name, kind in (("og-learn4", "hash:ip"), ("og-learnp4", "hash:ip,port")):
            ns.run(["ipset", "create", set_name, kind, "timeout", "3600", "counters", "maxelem", "100000"])
        procs.append(ns.popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                               "--no-hosts", "--listen-address=" + UPSTREAM, "--bind-interfaces", "--port=53",
                               "--address=/plain.bench/203.0.113.8", "--address=/learn.bench/203.0.113.9",
                               "--local-ttl=60", "--cache-size=0", "--user=root", "--group=root", "--pid-file="]))
        with open(os.path.join(tmp, "domains.json"), "w") as fh:
            json.dump({"revision": 1, "domains": [{"entry": 1, "name": "learn.bench", "ports": []}]}, fh)
        with open(os.path.join(tmp, "dns.yml"), "w") as fh:
            json.dump({"listen": [FORWARDER], "upstreams": [UPSTREAM], "domains_file": os.path.join(tmp, "domains.json"),
                       "spool_dir": os.path.join(tmp, "spool"), "metrics_listen": "127.0.0.1:9901", "name": "bench"}, fh)
        log = os.path.join(tmp, "og-dns.log")
        dnsd = ns.popen(["taskset", "-c", "0", os.path.join(benchlib.TOP, ".venv", "bin", "og-dns"),
                         "--config", os.path.join(tmp, "dns.yml")], stderr=open(log, "w"))
        procs.append(dnsd)
        nslib.wait_ready(lambda: "og-dns: ready" in open(log).read(), dnsd, "og-dns", log)
        benchlib.log("measuring: %d sequential queries per name and path, then %.0f s floods" % (a.queries, a.seconds))
        args = {"queries": a.queries, "seconds": a.seconds, "inflight": a.inflight}
        out = ns.run(["taskset", "-c", "1", sys.executable, os.path.abspath(__file__), "--inside", json.dumps(args)],
                     timeout=900)
        result = json.loads(out.stdout)
        learned = ns.run(["ipset", "list", "og-learn4"]).stdout
        assert "203.0.113.9 " in learned, learned
    finally:
        benchlib.stop_processes(procs)
        spaces.close()
    rows = []
    for name in NAMES:
        t = result["latency"][name]
        row = [name]
        for q in (0.5, 0.99):
            direct, via = benchlib.percentile(t["direct"], q), benchlib.percentile(t["via"], q)
            row += ["%.3f" % (direct * 1000), "%.3f" % (via * 1000), "%.3f" % ((via - direct) * 1000)]
        qd, qv = result["qps"]["%s direct" % name], result["qps"]["%s via" % name]
        row += ["%.0f" % qd[0], "%.0f (%d lost)" % (qv[0], qv[1])]
        rows.append(row)
    load = open("/proc/loadavg").read().split()[:3]
    commit = subprocess.run(["git", "-C", benchlib.TOP, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print("`bench/dns_forwarder.py --queries %d --seconds %g --inflight %d` at %s on %s CPUs (nproc), kernel %s, "
          "Python %s, load average %s at the end; og-dns pinned to CPU 0, the client to CPU 1, dnsmasq upstream.\n"
          % (a.queries, a.seconds, a.inflight, commit, os.cpu_count(), platform.release(), platform.python_version(),
             " ".join(load)))
    print(benchlib.table(["name", "p50 direct ms", "p50 via og-dns ms", "p50 added ms", "p99 direct ms",
                          "p99 via og-dns ms", "p99 added ms", "q/s direct", "q/s via og-dns (one core)"], rows))


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
