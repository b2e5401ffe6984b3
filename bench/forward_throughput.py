"""TCP throughput client -> gateway -> internet with ours (10 and 100,000 allowed addresses) and the original's
linear chain of 10,000 rules, in namespaces, in the same run.

Topology (namespaces ogt-btc, ogt-btgw, ogt-bti): client 10.88.0.2 -> gateway (lan0 10.88.0.1, og-out
203.0.113.2, masquerade) -> internet 203.0.113.1 with the receiver on 198.51.100.10. Gateway configurations:
  no filter    forwarding and masquerade only: what the path costs without any filtering (reference)
  ours N       the product's policy (Firewall.apply) with N allowed addresses in the ipset: the receiver's address
               plus N-1 synthetic ones
  linear 10k   the original's shape: a chain of 10,000 `-s CLIENTS -d ADDRESS -j ACCEPT` rules reached from
               FORWARD, the receiver's address last; return packets match none of them and also walk the whole
               chain to FORWARD's policy ACCEPT, as in the original
Each round measures every configuration once, every other round in reverse order (iperf3 -t SECONDS, first
second omitted; a Python sender/receiver when iperf3 is missing); the table shows the median of the rounds.
After each run the counter of the rule that accepted the traffic is checked, so a number only counts if the
packets took the path it names.

Usage: forward_throughput.py [--seconds 4] [--rounds 5] [--tool auto|iperf3|python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (CLIENT_NET, OUTSIDE, TARGET, Lab, Namespaces, NamespaceLost, TimedRunner,  # noqa: E402
                      chain_length, expect, firewall, fmt_ratio, log, median, nslib, set_size,
                      synthetic_addresses, table, three_hosts, worker, worker_main)

LINEAR_CHAIN = "OGB-LINEAR"
IPERF_PORT = 5201
PY_PORT = 5202
CONFIGS = [("plain", 0), ("ours", 10), ("ours", 100000), ("linear", 10000)]
MASQUERADE = ["POSTROUTING", "-s", CLIENT_NET, "-o", OUTSIDE, "-j", "MASQUERADE"]


# ---- inside the gateway namespace ---------------------------------------------------------------------
def _clear(run, fw):
    fw.remove()
    while run(["iptables", "-D", "FORWARD", "-j", LINEAR_CHAIN], check=False).rc == 0:
        pass
    run(["iptables", "-F", LINEAR_CHAIN], check=False)
    run(["iptables", "-X", LINEAR_CHAIN], check=False)
    while run(["iptables", "-t", "nat", "-D"] + MASQUERADE, check=False).rc == 0:
        pass


def configure(mode, n):
    """Put the gateway into one configuration, starting from nothing; returns what is in the kernel."""
    run = TimedRunner()
    fw = firewall(run)
    _clear(run, fw)
    if mode == "plain":
        run(["iptables", "-t", "nat", "-A"] + MASQUERADE)
        return {"rules": 0}
    if mode == "ours":
        fw.preflight()
        fw.apply()
        fw.replace([TARGET] + synthetic_addresses(n - 1))
        expect(set_size(run, "og-allow4"), n, "members of og-allow4")
        return {"members": n}
    if mode == "linear":
        rules = synthetic_addresses(n - 1) + [TARGET]
        text = "*filter\n:%s - [0:0]\n%sCOMMIT\n" % (LINEAR_CHAIN, "".join(
            "-A %s -s %s -d %s -j ACCEPT\n" % (LINEAR_CHAIN, CLIENT_NET, a) for a in rules))
        run(["iptables-restore", "--noflush"], stdin=text)
        run(["iptables", "-I", "FORWARD", "1", "-j", LINEAR_CHAIN])
        run(["iptables", "-t", "nat", "-A"] + MASQUERADE)
        expect(chain_length(run, LINEAR_CHAIN), n, "rules in %s" % LINEAR_CHAIN)
        return {"rules": n}
    raise ValueError("unknown mode %r: use plain, ours or linear" % mode)


def matched(mode):
    """Bytes the rule or set member that lets the traffic through has counted so far (client -> internet)."""
    run = TimedRunner()
    if mode == "ours":
        # The rule that accepts client -> internet traffic whose destination is in og-allow4 (rule 1).
        out = run(["iptables", "-t", "filter", "-L", "OG-FORWARD", "-v", "-x", "-n"]).stdout.splitlines()
        return sum(int(line.split()[1]) for line in out[2:] if "match-set og-allow4 dst" in line)
    if mode == "linear":
        out = run(["iptables", "-t", "filter", "-L", LINEAR_CHAIN, "-v", "-x", "-n"]).stdout.splitlines()
        last = out[-1].split()
        expect(last[-1], TARGET, "destination of the last rule of %s" % LINEAR_CHAIN)
        return int(last[1])
    # No filter, so no rule counts: the bytes sent out of the outside interface stand in.
    with open("/sys/class/net/%s/statistics/tx_bytes" % OUTSIDE) as f:
        return int(f.read())


# ---- traffic (orchestrator side) ----------------------------------------------------------------------
RECEIVER = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(60)
conn, _ = srv.accept(); conn.settimeout(60)
buf = bytearray(1 << 20); total = 0; first = None
while True:
    n = conn.recv_into(buf)
    if not n:
        break
    if first is None:
        first = time.monotonic()
    total += n
print(total, time.monotonic() - (first or time.monotonic()))
"""

SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
data = b"\0" * (1 << 18); deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    s.sendall(data)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
"""


def listening(host, port):
    """The listening sockets on this TCP port in the host (empty text when none)."""
    return host.run(["ss", "-Hltn", "sport = :%d" % port]).stdout.strip()


def start_iperf_server(inet):
    inet.popen(["iperf3", "-s", "-B", TARGET, "-p", str(IPERF_PORT)])
    nslib.wait_until(lambda: listening(inet, IPERF_PORT), timeout=10,
                     what="iperf3 server listening in %s" % inet.name)


def build(spaces, tool):
    client, gw, inet = three_hosts(spaces, "t")
    if tool == "iperf3":
        start_iperf_server(inet)
    return client, gw, inet


def measure(hosts, tool, seconds):
    """Gigabits per second from client to the target through the gateway as it is configured now."""
    client, gw, inet = hosts
    try:
        if tool == "iperf3":
            res = client.run(["iperf3", "-c", TARGET, "-p", str(IPERF_PORT), "-t", str(seconds), "-O", "1", "-J"],
                             check=False, timeout=seconds + 30)
            data = json.loads(res.stdout or "{}")
            if "error" in data or "end" not in data:
                raise RuntimeError("iperf3 failed: %s %s" % (data.get("error", ""), res.stderr.strip()[-300:]))
            return data["end"]["sum_received"]["bits_per_second"] / 1e9
        receiver = inet.popen([sys.executable, "-c", RECEIVER, TARGET, str(PY_PORT)], stdout=subprocess.PIPE,
                              text=True)
        nslib.wait_until(lambda: listening(inet, PY_PORT), timeout=10, what="receiver listening")
        client.run([sys.executable, "-c", SENDER, TARGET, str(PY_PORT), str(seconds)], timeout=seconds + 30)
        out, dummy = receiver.communicate(timeout=30)
        total, elapsed = out.split()
        return int(total) * 8 / float(elapsed) / 1e9
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        if any(ns.name not in nslib.namespaces() for ns in hosts):
            raise NamespaceLost("a namespace vanished during the transfer (%s)" % exc)
        raise


def one_run(hosts, mode, n, tool, seconds):
    dummy, gw, dummy = hosts
    worker(gw, __file__, "configure", {"mode": mode, "n": n})
    before = worker(gw, __file__, "matched", {"mode": mode})
    gbits = measure(hosts, tool, seconds)
    counted = worker(gw, __file__, "matched", {"mode": mode}) - before
    # At least a tenth of what was sent must have been counted by the rule that is meant to accept it.
    minimum = gbits * 1e9 / 8 * seconds / 10
    if counted < minimum:
        raise RuntimeError("%s %d: the accepting rule counted %d bytes, expected at least %d: the traffic did not "
                           "take the measured path" % (mode, n, counted, minimum))
    return gbits


def label(mode, n):
    return {"plain": "no filter (forward + masquerade)", "ours": "ours, {:,} addresses in the set".format(n),
            "linear": "baseline: linear chain of {:,} rules".format(n)}[mode]


def report(results, tool, seconds, rounds):
    lin = median(results[("linear", 10000)])
    plain = median(results[("plain", 0)])
    rows = []
    for mode, n in CONFIGS:
        values = results[(mode, n)]
        rows.append([label(mode, n), "%.2f" % median(values), " ".join("%.2f" % v for v in values),
                     fmt_ratio(median(values) / lin), "%.0f%%" % (100 * median(values) / plain)])
    ours10, ours100k = median(results[("ours", 10)]), median(results[("ours", 100000)])
    tool_text = "%s, first second omitted" % first_line(["iperf3", "--version"]) if tool == "iperf3" else \
        "a Python socket sender and receiver"
    return "\n".join([
        "## Forwarding throughput (bench/forward_throughput.py)\n",
        "One TCP stream client -> gateway -> internet through veth pairs, %s, %d s per run, %d rounds (every "
        "other one in reverse order); the median is shown. Every run checks that the rule meant to accept the "
        "traffic counted it.\n" % (tool_text, seconds, rounds),
        table(["gateway", "Gbit/s (median)", "each round", "vs linear 10,000", "of no filter"], rows),
        "\nours with 100,000 addresses / ours with 10: %s (the set does not slow packets down when this is "
        "about 1); ours with 100,000 / linear chain of 10,000: %s.\n"
        % (fmt_ratio(ours100k / ours10), fmt_ratio(ours100k / lin)),
    ])


def first_line(argv):
    return nslib.sh(argv, check=False).stdout.strip().splitlines()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of one transfer")
    parser.add_argument("--rounds", type=int, default=5, help="measurements of each configuration")
    parser.add_argument("--tool", choices=["auto", "iperf3", "python"], default="auto")
    args = parser.parse_args()
    if args.seconds < 2 or args.rounds < 1:
        parser.error("--seconds must be at least 2 and --rounds at least 1")
    tool = args.tool
    if tool == "auto":
        tool = "iperf3" if shutil.which("iperf3") else "python"
    elif tool == "iperf3" and not shutil.which("iperf3"):
        parser.error("--tool iperf3: iperf3 is missing; install the Debian package iperf3 or use --tool python")
    spaces = Namespaces()
    results = {config: [] for config in CONFIGS}
    try:
        lab = Lab(spaces, lambda s: build(s, tool))
        for r in range(args.rounds):
            # Every other round runs backwards, so a drift in the machine's load does not favour one column.
            for mode, n in (CONFIGS if r % 2 == 0 else CONFIGS[::-1]):
                gbits = lab.run(lambda hosts: one_run(hosts, mode, n, tool, args.seconds))
                results[(mode, n)].append(gbits)
                log("round %d: %s: %.2f Gbit/s" % (r + 1, label(mode, n), gbits))
    finally:
        spaces.close()
    sys.stdout.write(report(results, tool, args.seconds, args.rounds))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        worker_main({"configure": configure, "matched": matched})
    else:
        main()
