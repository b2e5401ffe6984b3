"""Server at scale: 100,000 entries; list-page and "why is this address allowed" latency.

Baselines in the same run: the same queries at 1,000 entries (how latency grows with the table), and for
"why", a naive scan that loads every address and tests containment in Python.

    .venv/bin/python bench/server_scale.py [--entries 100000]
"""

import argparse
import ipaddress
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from server_app import create_app, init_db  # noqa: E402
from server_app.models import EntryAddress, db  # noqa: E402
from server_app.services import entries  # noqa: E402


def timed(fn, repeat=30):
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def target(i):
    # Synthetic public addresses and /24s from 11.0.0.0/8 and 23.0.0.0/8; one entry in ten is a network.
    if i % 10 == 0:
        return "23.%d.%d.0/24" % (i >> 8 & 255, i & 255)
    return "11.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)


def fill(app, n, start=0):
    cfg = app.config["OG"]
    t = time.perf_counter()
    for lo in range(start, n, 20000):
        items = [{"target": target(i), "comment": "entry %d" % i} for i in range(lo, min(n, lo + 20000))]
        entries.import_entries(items, cfg, "bench")
    return time.perf_counter() - t


def measure(app, n):
    cfg = app.config["OG"]
    probe = "11.0.%d.%d" % ((n // 2) >> 8 & 255, (n // 2) & 255)
    net_probe = "23.0.%d.77" % (n // 20 & 255)
    results = {
        "list page 1 (50)": timed(lambda: entries.query(None, None, 1, 50)),
        "list last page": timed(lambda: entries.query(None, None, max(1, n // 50), 50)),
        "list text search": timed(lambda: entries.query("entry 4242", None, 1, 50)),
        "list kind=cidr": timed(lambda: entries.query(None, "cidr", 1, 50)),
        "why (host)": timed(lambda: entries.why(probe, cfg)),
        "why (in a /24)": timed(lambda: entries.why(net_probe, cfg)),
    }
    db.session.rollback()
    return results


def naive_why(address):
    ip = ipaddress.ip_address(address)
    return [a.entry_id for a in db.session.query(EntryAddress).all() if ip in ipaddress.ip_network(a.address)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(config={"data_dir": tmp, "secret_key": "b" * 32, "resolver_enabled": False,
                                 "database_url": "sqlite:///%s/bench.db" % tmp})
        init_db(app)
        with app.app_context():
            fill(app, 1000)
            small = measure(app, 1000)
            fill_seconds = fill(app, args.entries, 1000)
            big = measure(app, args.entries)
            probe = "11.0.%d.%d" % ((args.entries // 2) >> 8 & 255, (args.entries // 2) & 255)
            naive = timed(lambda: naive_why(probe), repeat=3)
            assert sorted(naive_why(probe)) == sorted(e["entry_id"] for e in entries.why(probe, app.config["OG"])["entries"])
    print("server at scale: SQLite, %d entries (imported in %.1f s)" % (args.entries, fill_seconds))
    print("%-22s %14s %14s %8s" % ("query (median)", "1,000 entries", "%d entries" % args.entries, "ratio"))
    for key in small:
        print("%-22s %12.2f ms %12.2f ms %7.1fx" % (key, small[key] * 1000, big[key] * 1000, big[key] / small[key]))
    print("why: supernet index lookup %.2f ms vs naive scan of every address %.0f ms: %.0fx faster"
          % (big["why (host)"] * 1000, naive * 1000, naive / big["why (host)"]))


if __name__ == "__main__":
    main()
