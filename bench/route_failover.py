"""How long og-route takes to move the routes to the standby gateway when the primary's health endpoint stops.

Builds its own namespaces (client on a bridge with gateways A and B, each serving /healthz on port 9900 with
python's http.server), runs og-route in the client namespace, then repeatedly:
  stop A's health server -> time until the kernel routes 8.8.8.8 via B ("first") and until every metric-100
  route of og-route points at B ("all"); start A again and wait until the routes are back.
The clock starts when the health server is killed and is read inside the client namespace (pyroute2, polling
every millisecond), so no process start-up is counted. Baseline, in the same run: a plain `ip -batch` that
replaces the same routes (both metrics, all prefixes) towards B, timed from process start to exit.

Usage (root): .venv/bin/python bench/route_failover.py [--runs 5] [--write bench/results/route_failover.md]
Nothing outside namespaces named ogt-bf* (the prefix is $OG_TEST_PREFIX when set) is touched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)  # the repository, for the package tests.support

GW_A, GW_B = "10.89.0.1", "10.89.0.3"
OG_ROUTE = os.path.join(os.path.dirname(sys.executable), "og-route")


def measure(kill_pid, standby):
    """Inside the client namespace: kill the primary's health server and time the kernel's switch."""
    import signal

    from pyroute2 import IPRoute

    from og_kernel.og_routes import ROUTE_PROTO
    ipr = IPRoute()

    def primaries():
        return set(str(m.get_attr("RTA_GATEWAY")) for m in ipr.get_routes(family=2, table=254)
                   if m["proto"] == ROUTE_PROTO and m.get_attr("RTA_PRIORITY") == 100)

    first = None
    start = time.monotonic()
    os.kill(kill_pid, signal.SIGKILL)
    deadline = start + 60
    while time.monotonic() < deadline:
        if first is None:
            got = ipr.route("get", dst="8.8.8.8")
            if str(got[0].get_attr("RTA_GATEWAY")) == standby:
                first = time.monotonic() - start
        if first is not None and primaries() == {standby}:
            print(json.dumps({"first": first, "all": time.monotonic() - start}))
            return 0
        time.sleep(0.001)
    print(json.dumps({"error": "no switch within 60 s"}))
    return 1


class Bench:
    def __init__(self, health_dir):
        from tests.support.nslib import PREFIX, Netns, link
        self.client = Netns(PREFIX + "bfc")
        self.gw = {GW_A: Netns(PREFIX + "bfa"), GW_B: Netns(PREFIX + "bfb")}
        self.health_dir = health_dir
        self.health = {}
        self.client.ip("link", "add", "br0", "type", "bridge")
        self.client.ip("addr", "add", "10.89.0.2/24", "dev", "br0")
        self.client.ip("link", "set", "br0", "up")
        for i, address in enumerate((GW_A, GW_B)):
            link(self.client, "port%d" % i, None, self.gw[address], "lan0", address + "/24")
            self.client.ip("link", "set", "port%d" % i, "master", "br0")
        with open(os.path.join(health_dir, "healthz"), "w") as fh:
            fh.write("ok\n")

    def close(self):
        for ns in [self.client] + list(self.gw.values()):
            ns.delete()

    def start_health(self, gw):
        from tests.support.nslib import wait_until
        self.health[gw] = self.gw[gw].popen([sys.executable, "-m", "http.server", "9900", "--bind", gw,
                                             "--directory", self.health_dir])
        wait_until(lambda: self.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                                            "http://%s:9900/healthz" % gw], check=False).stdout == "200",
                   timeout=15, what="health endpoint of %s" % gw)

    def primaries(self):
        routes = json.loads(self.client.ip("-j", "route", "show", "proto", "191", "metric", "100").stdout)
        return set(r.get("gateway") for r in routes), len(routes)

    def wait_primary(self, gw, count):
        from tests.support.nslib import wait_until
        wait_until(lambda: self.primaries() == ({gw}, count), timeout=60, interval=0.05,
                   what="every route via %s" % gw)

    def failover_runs(self, runs, interval, fall, log_path, prefixes):
        env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1")
        with open(log_path, "w") as log:
            daemon = self.client.popen([OG_ROUTE, "--gateway", GW_A, "--gateway", GW_B, "--interval", str(interval),
                                        "--fall", str(fall), "--log-level", "debug"], stderr=log, env=env)
        results = []
        try:
            from tests.support.nslib import wait_until

            def started():
                with open(log_path) as fh:
                    return "traffic goes to gateway %s" % GW_A in fh.read()

            # The routes may still be there from the previous daemon: wait for this one's first probe, which
            # decides without hysteresis, so that no kill lands before it.
            wait_until(started, timeout=60, what="og-route's first probe")
            self.wait_primary(GW_A, prefixes)
            time.sleep(interval * 2)
            for dummy in range(runs):
                proc = self.health.pop(GW_A)
                out = self.client.run([sys.executable, os.path.abspath(__file__), "measure", str(proc.pid), GW_B],
                                      env=dict(env, PYTHONPATH=TOP), timeout=120)
                proc.wait(timeout=10)
                results.append(json.loads(out.stdout))
                self.start_health(GW_A)
                self.wait_primary(GW_A, prefixes)
                time.sleep(interval * 2)   # a fresh probe cycle, so the next kill lands at a random phase
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        with open(log_path) as fh:
            applies = [float(m) for m in re.findall(r"routes applied: added 0, changed \d+, removed 0 in ([0-9.]+)s",
                                                    fh.read())]
        return results, applies

    def baseline_runs(self, runs, prefixes_list):
        """`ip -batch` replacing every route (both metrics) towards one gateway, alternating B and A."""
        times = []
        for i in range(runs):
            primary, standby = (GW_B, GW_A) if i % 2 == 0 else (GW_A, GW_B)
            batch = "".join("route replace %s via %s metric 100 proto 191\nroute replace %s via %s metric 101 "
                            "proto 191\n" % (p, primary, p, standby) for p in prefixes_list)
            start = time.monotonic()
            subprocess.run(["ip", "-n", self.client.name, "-batch", "-"], input=batch, text=True, check=True)
            times.append(time.monotonic() - start)
        return times


def fmt(seconds):
    return "%.3f s" % seconds if seconds >= 0.1 else "%.1f ms" % (seconds * 1000)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "measure":
        return measure(int(argv[1]), argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", metavar="PATH", help="write the figures as Markdown here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("route_failover: needs root to create network namespaces", file=sys.stderr)
        return 2
    from og_kernel.og_routes import public_prefixes
    prefixes = [str(p) for p in public_prefixes()]
    settings = [(1.0, 2, "defaults (--interval 1 --fall 2)"), (0.2, 2, "--interval 0.2 --fall 2")]
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(tmp)
        try:
            bench.start_health(GW_A)
            bench.start_health(GW_B)
            rows = []
            for interval, fall, label in settings:
                results, applies = bench.failover_runs(args.runs, interval, fall, os.path.join(tmp, "og.log"),
                                                       len(prefixes))
                bad = [r for r in results if "error" in r]
                if bad:
                    print("route_failover: %s" % bad[0]["error"], file=sys.stderr)
                    return 1
                rows.append((label, [r["first"] for r in results], [r["all"] for r in results], applies))
            baseline = bench.baseline_runs(max(args.runs, 5) * 2, prefixes)
        finally:
            bench.close()

    base = statistics.median(baseline)
    apply_median = statistics.median([a for row in rows for a in row[3]])
    lines = [
        "# og-route failover time",
        "",
        "Measured by `bench/route_failover.py` on %s: %s CPUs (nproc), kernel %s, Python %s, %d IPv4 prefixes "
        "routed in failover mode (%d routes: primary metric 100, standby 101), %d runs per setting." % (
            datetime.date.today().isoformat(), os.cpu_count(), platform.release(), platform.python_version(),
            len(prefixes), 2 * len(prefixes), args.runs),
        "",
        "From killing the primary's health server to the kernel's route for 8.8.8.8 pointing at the standby "
        "(first) and to every metric-100 route pointing at it (all). The baseline is a plain `ip -batch` of "
        "`route replace` for the same %d routes, from process start to exit." % (2 * len(prefixes)),
        "",
        "| setting | first: median (min-max) | all: median (min-max) | og-route apply, median | all / baseline |",
        "|---|---|---|---|---|",
    ]
    for label, first, every, applies in rows:
        lines.append("| %s | %s (%s-%s) | %s (%s-%s) | %s | %.0fx |" % (
            label, fmt(statistics.median(first)), fmt(min(first)), fmt(max(first)),
            fmt(statistics.median(every)), fmt(min(every)), fmt(max(every)),
            fmt(statistics.median(applies)) if applies else "n/a", statistics.median(every) / base))
    lines += [
        "| baseline: `ip -batch` route replace | | %s (%s-%s) | | 1x |" % (
            fmt(base), fmt(min(baseline)), fmt(max(baseline))),
        "",
        "Detection dominates: a gateway counts as down after `--fall` failed probes, one probe per `--interval`, "
        "so the expected time is about (fall - 1 + U(0,1)) x interval, plus the changes. og-route makes them "
        "through pyroute2, one netlink request per route (median %s for the %d routes of a switch, metric-100 "
        "routes first), %.0fx what `ip -batch` needs for the same routes; that is %.0f%% of the failover time "
        "with the defaults." % (fmt(apply_median), 2 * len(prefixes), apply_median / base,
                                100 * apply_median / statistics.median(rows[0][2])),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        with open(args.write, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
