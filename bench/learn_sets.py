"""What one learned address costs og-dns: LearnSets.add through netlink against the ipset tool, in the same run.

og-dns puts the addresses of every answer for an allowed name into og-learn4 (og_learn.LearnSets, one netlink
socket). Measured per address, on sets the product's Firewall.apply() created, N distinct addresses each:
  netlink        LearnSets.add([(address, None, 300)]): one call per answer of one address
  netlink port   LearnSets.add([(address, "443/tcp", 300)]) into og-learnp4
  refresh        LearnSets.add of addresses already there (a repeated answer: new timeout, counters kept)
Baselines (what a forwarder without a netlink socket would do):
  ipset add      one `ipset -exist add og-learn4 ADDRESS timeout 300` process per address
  ipset restore  one `ipset restore -exist` process per address, fed the one line `add og-learn4 ADDRESS timeout 300`
All kernel work runs in the namespace ogt-blearn; every step checks the set holds what was timed.

Usage: learn_sets.py [--count 2000] [--process-count 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (Lab, Namespaces, expect, firewall, fmt_ratio, gateway_only, log, set_size,  # noqa: E402
                      synthetic_addresses, table, worker, worker_main)

LEARN = "og-learn4"
LEARN_PORTS = "og-learnp4"
TIMEOUT = 300


# ---- inside the gateway namespace ---------------------------------------------------------------------
def measure(count, process_count):
    """Seconds per address of each way, on freshly flushed learn sets."""
    from og_kernel.og_learn import LearnSets  # noqa: E402  (the worker side only, inside the namespace)

    fw = firewall()
    run = fw.run
    fw.remove()
    fw.preflight()
    fw.apply()
    addresses = synthetic_addresses(count)
    result = {}
    sets = LearnSets()
    try:
        started = time.perf_counter()
        for address in addresses:
            sets.add([(address, None, TIMEOUT)])
        result["netlink"] = (time.perf_counter() - started) / count
        expect(set_size(run, LEARN), count, "members of %s after the netlink adds" % LEARN)
        started = time.perf_counter()
        for address in addresses:
            sets.add([(address, None, TIMEOUT + 60)])
        result["refresh"] = (time.perf_counter() - started) / count
        expect(set_size(run, LEARN), count, "members of %s after the refreshes" % LEARN)
        started = time.perf_counter()
        for address in addresses:
            sets.add([(address, "443/tcp", TIMEOUT)])
        result["netlink_port"] = (time.perf_counter() - started) / count
        expect(set_size(run, LEARN_PORTS), count, "members of %s after the netlink adds" % LEARN_PORTS)
    finally:
        sets.close()
    log("netlink: %.1f us an address, refresh %.1f us, with a port %.1f us" % (
        result["netlink"] * 1e6, result["refresh"] * 1e6, result["netlink_port"] * 1e6))

    baseline = addresses[:process_count]
    run(["ipset", "flush", LEARN])
    started = time.perf_counter()
    for address in baseline:
        subprocess.run(["ipset", "-exist", "add", LEARN, address, "timeout", str(TIMEOUT)], check=True)
    result["process"] = (time.perf_counter() - started) / process_count
    expect(set_size(run, LEARN), process_count, "members of %s after the ipset add processes" % LEARN)
    run(["ipset", "flush", LEARN])
    started = time.perf_counter()
    for address in baseline:
        subprocess.run(["ipset", "restore", "-exist"], input="add %s %s timeout %d\n" % (LEARN, address, TIMEOUT),
                       text=True, check=True)
    result["restore"] = (time.perf_counter() - started) / process_count
    expect(set_size(run, LEARN), process_count, "members of %s after the ipset restore processes" % LEARN)
    log("ipset add process: %.1f us an address, ipset restore of one line: %.1f us" % (
        result["process"] * 1e6, result["restore"] * 1e6))
    fw.remove()
    return result


# ---- report -------------------------------------------------------------------------------------------
def machine():
    """The machine line of the results: load, CPUs, kernel, Python and the tools' versions."""
    def out(argv):
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import pyroute2  # noqa: E402  (only for its version)
    return "load average %s, nproc %s, %s, kernel %s, Python %s, %s, pyroute2 %s" % (
        " ".join(open("/proc/loadavg").read().split()[:3]), os.cpu_count(), model, platform.release(),
        platform.python_version(), out(["ipset", "--version"]).split(",")[0], pyroute2.__version__)


def report(r, count, process_count, before, after):
    us = "%.1f"
    rows = [
        ["LearnSets.add, one address (netlink)", us % (r["netlink"] * 1e6), "1×"],
        ["LearnSets.add, refresh of an address there", us % (r["refresh"] * 1e6), fmt_ratio(r["refresh"] / r["netlink"])],
        ["LearnSets.add, address with 443/tcp", us % (r["netlink_port"] * 1e6),
         fmt_ratio(r["netlink_port"] / r["netlink"])],
        ["`ipset -exist add` process", us % (r["process"] * 1e6), fmt_ratio(r["process"] / r["netlink"])],
        ["`ipset restore -exist` of one line", us % (r["restore"] * 1e6), fmt_ratio(r["restore"] / r["netlink"])],
    ]
    return "\n".join([
        "## One learned address (bench/learn_sets.py)\n",
        "Microseconds per address into `og-learn4` (timeout %d), in one namespace and one run: %s distinct addresses "
        "through netlink, %s through each process baseline. Machine at the start: %s; load at the end %s.\n"
        % (TIMEOUT, "{:,}".format(count), "{:,}".format(process_count), before, after),
        table(["way", "µs per address", "/ netlink"], rows),
        "\nThe netlink path needs %s of a process per add's time: process / netlink %s, restore / netlink %s.\n"
        % ("{:.0%}".format(r["netlink"] / r["process"]), fmt_ratio(r["process"] / r["netlink"]),
           fmt_ratio(r["restore"] / r["netlink"])),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="addresses added through netlink")
    parser.add_argument("--process-count", type=int, default=500, help="addresses added by each process baseline")
    args = parser.parse_args()
    if args.count < 1 or not 1 <= args.process_count <= args.count:
        parser.error("--count must be positive and --process-count between 1 and --count")
    before = machine()
    spaces = Namespaces()
    try:
        lab = Lab(spaces, lambda s: gateway_only(s, "learn"))
        result = lab.run(lambda gw: worker(gw, __file__, "measure",
                                           {"count": args.count, "process_count": args.process_count}))
    finally:
        spaces.close()
    after = " ".join(open("/proc/loadavg").read().split()[:3])
    sys.stdout.write(report(result, args.count, args.process_count, before, after))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        worker_main({"measure": measure})
    else:
        main()
