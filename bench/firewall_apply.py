"""How long it takes to put an allowlist of N addresses into the gateway's kernel, ours against the original's.

Ours (plugins/module_utils/og_firewall.py, the code the agent runs):
  snapshot     Firewall.replace(N addresses) into empty sets: temporary sets + `ipset swap`, one `ipset restore`
  re-snapshot  Firewall.replace() again with 1% of the addresses changed (what a reconnecting agent does)
  deltas       N calls of Firewall.update(add=[one address]): one `ipset restore` per address
Baseline (the system this replaces): one `iptables -A CHAIN -s CLIENTS -d ADDRESS -j ACCEPT` process per
address, into a chain reached from FORWARD. That is generous to it: it ran ~10 processes per change.

Sizes the baseline cannot reach in the time budget are extrapolated from measured samples (marked *): the
per-address cost of `iptables -A` is measured at several chain sizes (the chain filled in between with one
`iptables-restore`, not timed) and integrated. All kernel work runs in the namespace ogt-bapply.

Usage: firewall_apply.py [--sizes 1000,10000,100000] [--full-max 10000] [--sample 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (CLIENT_NET, Lab, Namespaces, TimedRunner, chain_length, expect, firewall, fmt_ratio,  # noqa: E402
                      fmt_s, gateway_only, log, median, per_item_integral, set_size, synthetic_addresses, table, worker,
                      worker_main)

BASE_CHAIN = "OGB-LIST"
ALLOW_SET = "og-allow4"


# ---- inside the gateway namespace ---------------------------------------------------------------------
def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ours(n, full_max, sample):
    """Snapshot, re-snapshot and single deltas of n addresses with the product's Firewall."""
    run = TimedRunner()
    fw = firewall(run)
    fw.remove()
    fw.preflight()
    fw.apply()
    addresses = synthetic_addresses(n)
    run.reset()
    snapshot = _timed(lambda: fw.replace(addresses))
    snapshot_commands = run.seconds
    expect(set_size(run, ALLOW_SET), n, "members of %s after the snapshot" % ALLOW_SET)
    changed = max(1, n // 100)
    moved = addresses[changed:] + synthetic_addresses(changed, start=n)
    resnapshot = _timed(lambda: fw.replace(moved))
    expect(set_size(run, ALLOW_SET), n, "members of %s after the re-snapshot" % ALLOW_SET)
    log("ours %d: snapshot %.3fs (ipset %.3fs), re-snapshot %.3fs" % (n, snapshot, snapshot_commands, resnapshot))

    # Single deltas: all of them up to full_max, else the last `step` on a set that already holds the rest.
    step = min(sample, n)
    if n <= full_max:
        fw.replace([])
        first = _timed(lambda: [fw.update(add=[a]) for a in addresses[:n - step]])
    else:
        fw.replace(addresses[:n - step])
        first = None
    last = _timed(lambda: [fw.update(add=[a]) for a in addresses[n - step:]])
    expect(set_size(run, ALLOW_SET), n, "members of %s after the deltas" % ALLOW_SET)
    per_delta_at_n = last / step
    deltas = first + last if first is not None else per_delta_at_n * n
    log("ours %d: %s single deltas %.2fs (%.2f ms each at this size)" % (
        n, "measured" if first is not None else "extrapolated", deltas, per_delta_at_n * 1000))
    fw.remove()
    return {"snapshot": snapshot, "snapshot_commands": snapshot_commands, "resnapshot": resnapshot,
            "changed": changed, "deltas": deltas, "deltas_measured": first is not None,
            "per_delta_at_n": per_delta_at_n}


def _fill(run, addresses):
    """Append rules for addresses to the baseline chain in one iptables-restore (setup only, not timed)."""
    if addresses:
        text = "*filter\n" + "".join("-A %s -s %s -d %s -j ACCEPT\n" % (BASE_CHAIN, CLIENT_NET, a)
                                     for a in addresses) + "COMMIT\n"
        run(["iptables-restore", "--noflush"], stdin=text)


def _append(run, addresses):
    for a in addresses:
        run(["iptables", "-A", BASE_CHAIN, "-s", CLIENT_NET, "-d", a, "-j", "ACCEPT"])


def baseline(n, full_max, sample):
    """The original's approach for n addresses, one `iptables -A` process per address."""
    run = TimedRunner()
    _drop_baseline(run)
    run(["iptables", "-N", BASE_CHAIN])
    run(["iptables", "-I", "FORWARD", "1", "-j", BASE_CHAIN])
    addresses = synthetic_addresses(n)
    step = min(sample, n)
    points = None
    if n <= full_max:
        first = _timed(lambda: _append(run, addresses[:n - step]))
        last = _timed(lambda: _append(run, addresses[n - step:]))
        total = first + last
        per_append_at_n = last / step
    else:
        # `step` timed appends starting at each of these chain sizes; the chain is filled in between.
        points, filled = [], 0
        for start in sorted({0, n // 10, n // 4, n // 2, 3 * n // 4, n - step}):
            start = max(start, filled)
            _fill(run, addresses[filled:start])
            seconds = _timed(lambda: _append(run, addresses[start:start + step]))
            filled = start + step
            points.append((start + step / 2.0, seconds / step))
            log("baseline %d: %d appends at chain size %d took %.2f ms each" % (n, step, start, seconds / step * 1000))
        _fill(run, addresses[filled:])
        total = per_item_integral([(0, points[0][1])] + points + [(n, points[-1][1])])
        per_append_at_n = points[-1][1]
    expect(chain_length(run, BASE_CHAIN), n, "rules in %s" % BASE_CHAIN)
    log("baseline %d: %s %.2fs (%.2f ms per append at this size)" % (
        n, "measured" if points is None else "extrapolated", total, per_append_at_n * 1000))
    _drop_baseline(run)
    return {"total": total, "measured": points is None, "per_append_at_n": per_append_at_n, "samples": points}


def _drop_baseline(run):
    while run(["iptables", "-D", "FORWARD", "-j", BASE_CHAIN], check=False).rc == 0:
        pass
    run(["iptables", "-F", BASE_CHAIN], check=False)
    run(["iptables", "-X", BASE_CHAIN], check=False)


# ---- report -------------------------------------------------------------------------------------------
def report(sizes, mine, base, full_max, sample, iptables_version, spawn):
    rows, per_change = [], []
    for n in sizes:
        o, b = mine[n], base[n]

        def star(measured):
            return "" if measured else "*"
        rows.append([
            "{:,}".format(n),
            "%s (ipset %s)" % (fmt_s(o["snapshot"]), fmt_s(o["snapshot_commands"])),
            fmt_s(o["resnapshot"]),
            fmt_s(o["deltas"]) + star(o["deltas_measured"]),
            fmt_s(b["total"]) + star(b["measured"]),
            fmt_ratio(b["total"] / o["snapshot"]),
            fmt_ratio(b["total"] / o["deltas"]),
        ])
        per_change.append(["{:,}".format(n), "%.2f" % (o["per_delta_at_n"] * 1000),
                           "%.2f" % (b["per_append_at_n"] * 1000),
                           fmt_ratio(b["per_append_at_n"] / o["per_delta_at_n"])])
    out = ["## Applying the allowlist (bench/firewall_apply.py)\n",
           "Seconds to put N addresses into an empty gateway. Ours: `Firewall.replace` (snapshot: temporary "
           "sets + swap, one `ipset restore`; in brackets the part spent in the ipset process, the rest is "
           "Python), the same again with 1%% of the addresses changed (re-snapshot, what a reconnect sends), and "
           "N single `Firewall.update(add=[address])` calls. Baseline: the original's one `iptables -A` process "
           "per address (%s). * = extrapolated: single deltas above %s addresses from the last %s "
           "deltas on a set holding the rest; the baseline above %s from %s appends sampled at 6 chain sizes "
           "and integrated.\n" % (iptables_version, "{:,}".format(full_max), "{:,}".format(sample),
                                  "{:,}".format(full_max), "{:,}".format(sample)),
           table(["addresses", "ours: snapshot s", "ours: re-snapshot s", "ours: single deltas s",
                  "baseline: iptables -A each s", "baseline / snapshot", "baseline / deltas"], rows),
           "\nOne more address when N are already in place (ms per change, average of the last %s changes):\n"
           % "{:,}".format(sample),
           table(["addresses in place", "ours: update()", "baseline: iptables -A", "baseline / ours"], per_change),
           "\nStarting any process (`true`) from Python takes %.2f ms on this machine: a single change of either kind "
           "is one process, so that is the floor of both columns.\n" % (spawn * 1000)]
    return "\n".join(out)


def spawn_seconds(count=200):
    """Median wall time of starting and reaping one trivial process from Python."""
    times = []
    for dummy in range(count):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append(time.perf_counter() - started)
    return median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated allowlist sizes")
    parser.add_argument("--full-max", type=int, default=10000,
                        help="largest size measured in full for single deltas and the baseline")
    parser.add_argument("--sample", type=int, default=500, help="changes timed per sample")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes %r: give whole numbers separated by commas, e.g. 1000,10000" % args.sizes)
    if args.sample < 1 or any(n < 1 for n in sizes):
        parser.error("--sizes and --sample must be positive")
    iptables_version = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                                      check=False).stdout.strip()
    spaces = Namespaces()
    mine, base = {}, {}
    try:
        lab = Lab(spaces, lambda s: gateway_only(s, "apply"))
        for n in sizes:
            params = {"n": n, "full_max": args.full_max, "sample": args.sample}
            mine[n] = lab.run(lambda gw: worker(gw, __file__, "ours", params))
            base[n] = lab.run(lambda gw: worker(gw, __file__, "baseline", params))
    finally:
        spaces.close()
    sys.stdout.write(report(sizes, mine, base, args.full_max, args.sample, iptables_version, spawn_seconds()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        worker_main({"ours": ours, "baseline": baseline})
    else:
        main()
