"""Shared parts of the gateway benchmarks: namespaces, synthetic addresses, workers inside a namespace, tables.

Every benchmark runs in two halves: the orchestrator (in the machine's namespace) only creates and deletes
network namespaces named ogt-b*; all kernel work (ipset, iptables, traffic) runs in a worker process started
inside a namespace with `ip netns exec`, which refuses to run if it finds itself in the root namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(BENCH)
sys.path.insert(0, TOP)  # the repository, for the package tests.support

from tests.support import nslib  # noqa: E402  (tests/support/nslib.py: Netns, link, cleanup)

CLIENT_NET = "10.88.0.0/24"
OUTSIDE = "og-out"
# Synthetic allowlist members: public space that nothing in the namespaces routes to, so no packet ever goes
# there; they only fill the sets and chains. 11/8 first, then 23/8 (33.5 million addresses in all).
SYNTHETIC_BLOCKS = ("11.0.0.0/8", "23.0.0.0/8")
# The one destination traffic really goes to: a documentation address on the "internet" namespace's loopback.
TARGET = "198.51.100.10"


def synthetic_addresses(count, start=0):
    """`count` distinct public IPv4 addresses (text) from SYNTHETIC_BLOCKS, beginning at index `start`."""
    blocks = [ipaddress.ip_network(b) for b in SYNTHETIC_BLOCKS]
    capacity = sum(b.num_addresses for b in blocks)
    if count < 0 or start < 0 or start + count > capacity:
        raise ValueError("synthetic_addresses(%d, start=%d): only %d addresses in %s; ask for fewer"
                         % (count, start, capacity, ", ".join(SYNTHETIC_BLOCKS)))
    out = []
    index = start
    for block in blocks:
        base, size = int(block.network_address), block.num_addresses
        while index < size and len(out) < count:
            a = base + index
            out.append("%d.%d.%d.%d" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255))
            index += 1
        index -= size
        if len(out) == count:
            break
    return out


def per_item_integral(points):
    """Total time to build a list item by item, from samples [(size, seconds per item at that size), ...].

    Trapezoids between sorted samples: the per-item cost is taken as linear between two measured sizes.
    """
    points = sorted(points)
    if len(points) < 2:
        raise ValueError("per_item_integral needs at least two (size, seconds) samples, got %r" % (points,))
    total = 0.0
    for (s0, c0), (s1, c1) in zip(points, points[1:]):
        total += (s1 - s0) * (c0 + c1) / 2.0
    return total


def median(values):
    return statistics.median(values)


def percentile(values, q):
    """The q-quantile (0.99: p99) of values by the nearest rank, None for no values."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def fmt_s(seconds):
    """Seconds with a sensible number of digits."""
    if seconds is None:
        return "-"
    if seconds >= 100:
        return "%.0f" % seconds
    if seconds >= 1:
        return "%.2f" % seconds
    if seconds >= 0.01:
        return "%.3f" % seconds
    return "%.4f" % seconds


def fmt_ratio(x):
    return "-" if x is None else ("%.0f×" % x if x >= 100 else "%.1f×" % x if x >= 10 else "%.2f×" % x)


def table(headers, rows):
    """A Markdown table (also readable in a terminal)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]]) + "\n"


def log(msg):
    """Progress goes to stderr; stdout carries only the results (Markdown, or JSON from a worker)."""
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---- namespaces (orchestrator side) ---------------------------------------------------------------------
class Namespaces:
    """Creates ogt-b* namespaces and deletes all of them on close(), also on SIGTERM/SIGINT."""

    def __init__(self):
        self.made = []
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._exit)

    @staticmethod
    def _exit(signum, frame):
        raise SystemExit(128 + signum)  # unwinds through the caller's finally, which deletes the namespaces

    def make(self, suffix):
        name = nslib.PREFIX + "b" + suffix
        if len(name) > 15:
            raise ValueError("namespace name %r is longer than 15 characters; use a shorter suffix" % name)
        ns = nslib.Netns(name)
        self.made.append(ns)
        return ns

    def close(self):
        for ns in reversed(self.made):
            ns.delete()
        self.made = []


def stop_processes(procs):
    """SIGTERM each process a bench started that still runs, and wait for it (each by its own pid)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def gateway_only(spaces, suffix):
    """One namespace with the outside interface og-out (a veth whose peer stays in the same namespace)."""
    gw = spaces.make(suffix)
    gw.ip("link", "add", OUTSIDE, "type", "veth", "peer", "name", "og-peer")
    gw.ip("link", "set", OUTSIDE, "up")
    gw.ip("link", "set", "og-peer", "up")
    return gw


def three_hosts(spaces, tag):
    """client (10.88.0.2) -> gateway (10.88.0.1 | og-out 203.0.113.2) -> internet (203.0.113.1, TARGET on lo)."""
    client, gw, inet = spaces.make(tag + "c"), spaces.make(tag + "gw"), spaces.make(tag + "i")
    nslib.link(client, "eth0", "10.88.0.2/24", gw, "lan0", "10.88.0.1/24")
    nslib.link(gw, OUTSIDE, "203.0.113.2/24", inet, "eth0", "203.0.113.1/24")
    client.ip("route", "add", "default", "via", "10.88.0.1")
    gw.ip("route", "add", "default", "via", "203.0.113.1")
    gw.sysctl("net.ipv4.ip_forward", 1)
    inet.ip("addr", "add", TARGET + "/32", "dev", "lo")
    return client, gw, inet


class NamespaceLost(RuntimeError):
    """A namespace vanished under a running worker (another session's test cleanup deletes every ogt-*)."""


def worker(ns, script, op, args=None, timeout=900, cpus=None):
    """Run `script --inside op ARGS_JSON` in namespace ns (on the CPUs `cpus`, a taskset list, when given); progress
    passes through, the JSON result is returned."""
    env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1", PYTHONPATH=TOP + os.pathsep + BENCH)
    pin = ["taskset", "-c", cpus] if cpus else []
    argv = ["ip", "netns", "exec", ns.name] + pin + [sys.executable, script, "--inside", op, json.dumps(args or {})]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        what = "worker %s %s in %s" % (os.path.basename(script), op, ns.name)
        if proc.returncode < 0 or ns.name not in nslib.namespaces():
            raise NamespaceLost("%s was killed (rc=%d) or its namespace is gone" % (what, proc.returncode))
        raise RuntimeError("%s failed (rc=%d)" % (what, proc.returncode))
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Lab:
    """Hosts built by build(spaces); run(fn) calls fn(hosts) and rebuilds and retries when a namespace is lost.

    Other sessions on this machine may run the test suite, whose cleanup deletes every ogt-* namespace; a
    benchmark step that loses its namespace is measured again from scratch, never half-counted.
    """

    def __init__(self, spaces, build, attempts=8):
        self.spaces = spaces
        self.build = build
        self.attempts = attempts
        self.hosts = None

    def run(self, fn):
        for attempt in range(1, self.attempts + 1):
            if self.hosts is None:
                self.hosts = self.build(self.spaces)
            try:
                return fn(self.hosts)
            except NamespaceLost as exc:
                log("%s; rebuilding the namespaces and measuring again (attempt %d of %d)"
                    % (exc, attempt, self.attempts))
                self.spaces.close()
                self.hosts = None
        raise RuntimeError("gave up after %d attempts: the benchmark namespaces kept disappearing (is another "
                           "session's test run deleting ogt-* namespaces?); run bench/run again later"
                           % self.attempts)


# ---- inside a namespace (worker side) -------------------------------------------------------------------
def refuse_root_namespace():
    """Exit unless this process is in a namespace of its own: benchmarks never touch the machine's firewall."""
    from og_kernel.og_command import in_root_netns

    if in_root_netns():
        sys.stderr.write("refusing to run: this worker changes iptables and ipsets and must run inside an ogt-b* "
                         "namespace (ip netns exec), not in the machine's own namespace\n")
        sys.exit(2)


class TimedRunner:
    """A CommandRunner that adds up the wall time spent in the commands it runs (ipset, iptables)."""

    def __init__(self):
        from og_kernel.og_command import CommandRunner

        self.inner = CommandRunner(timeout=600)
        self.seconds = 0.0
        self.calls = 0

    def which(self, name):
        return self.inner.which(name)

    def __call__(self, argv, stdin=None, check=True):
        started = time.perf_counter()
        try:
            return self.inner(argv, stdin=stdin, check=check)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def reset(self):
        self.seconds, self.calls = 0.0, 0


def firewall(runner=None):
    """The product's Firewall for the benchmark gateway (client network 10.88.0.0/24, outside og-out)."""
    from og_kernel.og_firewall import EgressPolicy, Firewall

    return Firewall(EgressPolicy([CLIENT_NET], OUTSIDE, ipv6=False), runner=runner or TimedRunner())


def expect(actual, wanted, what):
    """Stop the benchmark when the kernel does not hold what was just timed (a fast no-op proves nothing)."""
    if actual != wanted:
        raise RuntimeError("%s: expected %r, found %r" % (what, wanted, actual))


def set_size(run, name):
    """Number of members of an ipset, from its header (cheap even for large sets)."""
    for line in run(["ipset", "list", "-t", name]).stdout.splitlines():
        if line.startswith("Number of entries:"):
            return int(line.split(":")[1])
    raise RuntimeError("ipset list -t %s printed no 'Number of entries'" % name)


def chain_length(run, chain, table="filter"):
    """Number of rules in an iptables chain."""
    return sum(1 for line in run(["iptables", "-t", table, "-S", chain]).stdout.splitlines()
               if line.startswith("-A "))


def worker_main(ops):
    """Entry point of a worker: `script --inside OP ARGS_JSON`; prints the op's result as one JSON line."""
    refuse_root_namespace()
    op, args = sys.argv[2], json.loads(sys.argv[3])
    if op not in ops:
        sys.stderr.write("unknown worker op %r; known: %s\n" % (op, ", ".join(sorted(ops))))
        sys.exit(2)
    result = ops[op](**args)
    sys.stdout.write(json.dumps(result) + "\n")
