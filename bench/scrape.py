"""How long a Prometheus scrape of the gateway takes with 10,000 and 100,000 allowed addresses, ours against the
original's way of reading counters.

Ours: Firewall.counters(expected) (what the agent's collector calls on every scrape: `ipset list -o save` of the
out and in sets, parsed and folded into elements), and the whole /metrics body the agent's collector produces
(gateway_agent.metrics.AgentMetrics.render(), which also lists OG-REJECT and the denied-destination sets), and
the scrape the agent's HTTP handler serves (render(background=True): the background reader's latest read when
reads are slow).
Baseline: the original read its counters from iptables: `iptables -L CHAIN -v -x -n` of a chain with one rule
per address, parsed into {address: (packets, bytes)}; the chain is loaded with iptables-restore (not timed).
It is generous to the baseline: one chain of N rules, although it counted each direction.
Each figure is the median of --repeats scrapes. All kernel work runs in the namespace ogt-bscrape.

Usage: scrape.py [--sizes 10000,100000] [--repeats 5]
       scrape.py --profile 100000    (cProfile of one counters() and one /metrics body; prints the top functions)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (CLIENT_NET, TARGET, Lab, Namespaces, TimedRunner, chain_length, expect, firewall,  # noqa: E402
                      fmt_ratio, fmt_s, gateway_only, log, median, set_size, synthetic_addresses, table, worker,
                      worker_main)

BASE_CHAIN = "OGB-COUNT"


# ---- inside the gateway namespace ---------------------------------------------------------------------
def _repeat(fn, repeats):
    times, value = [], None
    for dummy in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return times, value


def _collector(fw, texts, limit=None, entries=True):
    """The agent's /metrics collector (AgentMetrics) on this firewall."""
    from gateway_agent.client import Stats
    from gateway_agent import metrics

    # The agent's own Stats; the agent itself is stood in for by the attributes the collector reads. Every
    # address is its own entry (as when operators list addresses), so the per-entry series are as many.
    cfg = {} if limit is None else {"metrics_address_limit": limit, "metrics_entry_limit": limit}
    agent = types.SimpleNamespace(lock=threading.Lock(), elements=texts, fw=fw, revision=1, stats=Stats(),
                                  names={t: [t.split("/")[0]] for t in texts} if entries else {}, cfg=cfg)
    return metrics.AgentMetrics(agent, "bench")


def _scrape_function(fw, texts, limit=None, entries=True):
    """A function that returns the agent's /metrics body read from the kernel now (AgentMetrics.render())."""
    return _collector(fw, texts, limit, entries).render


def _served(fw, texts, repeats):
    """Seconds of the scrapes the agent's HTTP handler serves (render(background=True)) after one read, as the
    background reader leaves it; and whether they were served from that read (reads slower than SLOW_READ)."""
    from gateway_agent.metrics import SLOW_READ
    collector = _collector(fw, texts)
    collector.read()
    times, body = _repeat(lambda: collector.render(background=True), repeats)
    return times, collector.counted.took >= SLOW_READ


def _exposition(fw, texts, repeats, limit=None, entries=True):
    """Seconds to produce the agent's /metrics body, or (None, reason) when the collector cannot be built.

    limit None: the agent's default metrics_address_limit and metrics_entry_limit; outputGuard's series must be 2 per
    address up to it, plus the two of address "other" above it; the per-entry bytes series 2 per entry up to it,
    plus the four of entry "other" (shared false and true) above it.
    """
    from gateway_agent.metrics import ADDRESS_LIMIT, ENTRY_LIMIT
    try:
        times, body = _repeat(_scrape_function(fw, texts, limit, entries), repeats)
    except Exception as exc:  # the collector belongs to the agent and may change shape; say why it is missing
        return None, "%s: %s" % (exc.__class__.__name__, exc)
    cap = ADDRESS_LIMIT if limit is None else limit
    series = body.count(b"\niptables_bytes_count{")
    expect(series, 2 * len(texts) if len(texts) <= cap else 2 * cap + 2,
           "iptables_bytes_count series in the /metrics body (2 per address up to the limit, 2 for the rest)")
    if entries:
        cap = ENTRY_LIMIT if limit is None else limit
        expect(body.count(b"\nog_gateway_entry_bytes_total{"), 2 * len(texts) if len(texts) <= cap else 2 * cap + 4,
               "og_gateway_entry_bytes_total series in the /metrics body (2 per entry up to the limit, 4 for the "
               "rest)")
    return times, len(body)


def ours(n, repeats):
    run = TimedRunner()
    fw = firewall(run)
    fw.remove()
    fw.preflight()
    fw.apply()
    from og_kernel.og_elements import Element

    texts = [str(Element.parse(a)) for a in [TARGET] + synthetic_addresses(n - 1)]
    fw.replace(texts)
    expect(set_size(run, "og-allow4"), n, "members of og-allow4")
    expected = [Element.parse(t) for t in texts]
    run.reset()
    counters_times, counters = _repeat(lambda: fw.counters(expected), repeats)
    ipset_seconds = run.seconds / repeats
    expect(len(counters), n, "elements returned by counters()")
    exposition_times, body = _exposition(fw, texts, repeats)
    # The per-address part alone (no per-entry series), and every address and entry with its own series (the
    # agent before metrics_address_limit and metrics_entry_limit: the baseline of the two others).
    address_times, address_body = _exposition(fw, texts, repeats, entries=False)
    every_times, every_body = _exposition(fw, texts, repeats, limit=n)
    served_times, from_reader = _served(fw, texts, repeats)
    fw.remove()
    log("ours %d: counters() %.3fs (ipset %.3fs), /metrics %s" % (
        n, median(counters_times), ipset_seconds,
        "%.3fs" % median(exposition_times) if exposition_times else "n/a (%s)" % body))
    return {"counters": counters_times, "ipset": ipset_seconds, "exposition": exposition_times, "body": body,
            "address": address_times, "address_body": address_body, "every": every_times,
            "every_body": every_body, "served": served_times, "from_reader": from_reader}


def profile(n, top):
    """cProfile of one counters() and one /metrics body at n addresses; the top functions go to stderr."""
    import cProfile
    import io
    import pstats

    from og_kernel.og_elements import Element

    fw = firewall(TimedRunner())
    fw.remove()
    fw.preflight()
    fw.apply()
    texts = [str(Element.parse(a)) for a in [TARGET] + synthetic_addresses(n - 1)]
    fw.replace(texts)
    expected = [Element.parse(t) for t in texts]
    scrape = _scrape_function(fw, texts)
    scrape()  # warm caches as a running agent has them
    for what, fn in (("counters()", lambda: fw.counters(expected)), ("/metrics body", scrape)):
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        log("profile of %s at %d addresses (sorted by own time):\n%s" % (what, n, out.getvalue()))
    fw.remove()
    return {}


def _read_chain(run):
    """{address: (packets, bytes)} from `iptables -L -v -x -n`, as the original's exporter read it."""
    result = {}
    for line in run(["iptables", "-L", BASE_CHAIN, "-v", "-x", "-n"]).stdout.splitlines()[2:]:
        parts = line.split()
        result[parts[-1]] = (int(parts[0]), int(parts[1]))
    return result


def baseline(n, repeats):
    run = TimedRunner()
    run(["iptables", "-F", BASE_CHAIN], check=False)
    run(["iptables", "-X", BASE_CHAIN], check=False)
    addresses = [TARGET] + synthetic_addresses(n - 1)
    text = "*filter\n:%s - [0:0]\n%sCOMMIT\n" % (BASE_CHAIN, "".join(
        "-A %s -s %s -d %s -j ACCEPT\n" % (BASE_CHAIN, CLIENT_NET, a) for a in addresses))
    run(["iptables-restore", "--noflush"], stdin=text)
    expect(chain_length(run, BASE_CHAIN), n, "rules in %s" % BASE_CHAIN)
    times, counters = _repeat(lambda: _read_chain(run), repeats)
    expect(len(counters), n, "addresses read from %s" % BASE_CHAIN)
    run(["iptables", "-F", BASE_CHAIN])
    run(["iptables", "-X", BASE_CHAIN])
    log("baseline %d: iptables -L + parse %.3fs" % (n, median(times)))
    return {"times": times}


# ---- report -------------------------------------------------------------------------------------------
def report(sizes, mine, base, repeats):
    from gateway_agent.metrics import ADDRESS_LIMIT, ENTRY_LIMIT
    rows = []
    notes = []
    for n in sizes:
        o, b = mine[n], base[n]
        counters, baseline_s = median(o["counters"]), median(b["times"])
        bodies = []
        for key, size in (("exposition", "body"), ("address", "address_body"), ("every", "every_body")):
            if o.get(key):
                bodies.append("%s (%.1f MB)" % (fmt_s(median(o[key])), o[size] / 1e6))
            else:
                bodies.append("n/a")
                notes.append("/metrics body (%s) at {:,}: not measured, the agent's collector failed: {}".format(
                    n, o.get(size)) % key)
        ratio = fmt_ratio(median(o["every"]) / median(o["exposition"])) if o.get("every") and o["exposition"] \
            else "n/a"
        served = "%s (%s)" % (fmt_s(median(o["served"])), "background read" if o["from_reader"] else "read now")
        rows.append(["{:,}".format(n), "%s (ipset %s)" % (fmt_s(counters), fmt_s(o["ipset"]))] + bodies +
                    [ratio, served, fmt_s(baseline_s), fmt_ratio(baseline_s / counters)])
    return "\n".join([
        "## Scrape (bench/scrape.py)\n",
        "Seconds per scrape, median of %d. Ours: `Firewall.counters(expected)` (in brackets the part spent in the "
        "`ipset list -o save` processes, one per owned set; the rest is Python) and the agent's whole /metrics body "
        "(AgentMetrics.render(); its size in brackets; every address is also its own entry, so the per-entry series "
        "are as many) with the default `metrics_address_limit` and `metrics_entry_limit` (%d addresses and %d "
        "entries with series of their own, the rest as `other`); the same without per-entry series (the "
        "per-address part); and with every address and entry its own series (both limits at N: the agent before "
        "the limits, the baseline of the body). Served scrape: what the agent's HTTP handler answers "
        "(`render(background=True)`): from the background reader's latest read when a read takes `SLOW_READ` or "
        "more, else read now (docs/metrics.md, \"How fresh a scrape is\"). Baseline of counters(): `iptables -L "
        "CHAIN -v -x -n` of one rule per address, parsed.\n" % (repeats, ADDRESS_LIMIT, ENTRY_LIMIT),
        table(["addresses", "ours: counters() s", "ours: /metrics body s", "per-address part only s",
               "every address and entry its own series s", "every / default", "served scrape s",
               "baseline: iptables -L + parse s",
               "baseline / counters()"], rows),
    ] + (["\n" + "\n".join("- " + note for note in notes) + "\n"] if notes else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated allowlist sizes")
    parser.add_argument("--repeats", type=int, default=5, help="scrapes timed per size")
    parser.add_argument("--profile", type=int, metavar="N", help="profile one scrape at N addresses instead")
    args = parser.parse_args()
    if args.profile is not None:
        if args.profile < 1:
            parser.error("--profile %d: give a positive number of addresses, e.g. 100000" % args.profile)
        spaces = Namespaces()
        try:
            Lab(spaces, lambda s: gateway_only(s, "scrape")).run(
                lambda gw: worker(gw, __file__, "profile", {"n": args.profile, "top": 25}))
        finally:
            spaces.close()
        return
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes %r: give whole numbers separated by commas, e.g. 10000,100000" % args.sizes)
    if args.repeats < 1 or any(n < 1 for n in sizes):
        parser.error("--sizes and --repeats must be positive")
    spaces = Namespaces()
    mine, base = {}, {}
    try:
        lab = Lab(spaces, lambda s: gateway_only(s, "scrape"))
        for n in sizes:
            params = {"n": n, "repeats": args.repeats}
            mine[n] = lab.run(lambda gw: worker(gw, __file__, "ours", params))
            base[n] = lab.run(lambda gw: worker(gw, __file__, "baseline", params))
    finally:
        spaces.close()
    sys.stdout.write(report(sizes, mine, base, args.repeats))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        worker_main({"ours": ours, "baseline": baseline, "profile": profile})
    else:
        main()
