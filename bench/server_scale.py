"""Server at scale: 100,000 entries; list-page, UI page and "why is this address allowed" latency.

Baselines in the same run: the same queries at 1,000 entries (how latency grows with the table), for
"why", a naive scan that loads every address and tests containment in Python, and for the UI's entries page
(a whole HTTP request through Flask: session, query, Jinja rendering) the JSON API's same page.
The UI's budget is UI_BUDGET_MS per page at 100,000 entries on this 2-core machine.

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
    for dummy in range(repeat):
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


UI_BUDGET_MS = 250


def clients(app):
    """A logged-in UI session and an API token (both through the WSGI app, as a browser would)."""
    import re
    from server_app.services import tokens, users
    users.create("bench", "bench-password-1", "viewer", created_by=("bench", "system", ""))
    dummy, secret = tokens.create("viewer", "bench")
    ui = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', ui.get("/login").text).group(1)
    assert ui.post("/login", data={"username": "bench", "password": "bench-password-1",
                                   "csrf_token": token}).status_code == 302
    return ui, {"Authorization": "Bearer " + secret}


def get_ok(client, path, headers=None):
    response = client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.status_code)
    return response


def measure(app, n, ui=None, api=None):
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
    if ui is not None:
        last = max(1, n // 50)
        api_client = app.test_client()
        results.update({
            "API GET page 1": timed(lambda: get_ok(api_client, "/api/v1/entries", api), repeat=15),
            "UI entries page 1": timed(lambda: get_ok(ui, "/entries"), repeat=15),
            "UI last page": timed(lambda: get_ok(ui, "/entries?page=%d" % last), repeat=15),
            "UI search": timed(lambda: get_ok(ui, "/entries?q=entry+4242"), repeat=15),
            "UI filters": timed(lambda: get_ok(ui, "/entries?kind=cidr&deletable=true&expiring=false"), repeat=15),
        })
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
            ui, api = clients(app)
            fill(app, 1000)
            small = measure(app, 1000, ui, api)
            fill_seconds = fill(app, args.entries, 1000)
            big = measure(app, args.entries, ui, api)
            probe = "11.0.%d.%d" % ((args.entries // 2) >> 8 & 255, (args.entries // 2) & 255)
            naive = timed(lambda: naive_why(probe), repeat=3)
            assert sorted(naive_why(probe)) == sorted(e["entry_id"] for e in entries.why(probe, app.config["OG"])["entries"])
    print("server at scale: SQLite, %d entries (imported in %.1f s)" % (args.entries, fill_seconds))
    print("%-22s %14s %14s %8s" % ("query (median)", "1,000 entries", "%d entries" % args.entries, "ratio"))
    for key in small:
        print("%-22s %12.2f ms %12.2f ms %7.1fx" % (key, small[key] * 1000, big[key] * 1000, big[key] / small[key]))
    print("UI entries page at %d entries: %.1f ms vs the JSON API's same page %.1f ms (%.2fx); every UI page "
          "%s the %d ms budget (slowest: %.1f ms)" % (
              args.entries, big["UI entries page 1"] * 1000, big["API GET page 1"] * 1000,
              big["UI entries page 1"] / big["API GET page 1"],
              "within" if max(v for k, v in big.items() if k.startswith("UI")) * 1000 <= UI_BUDGET_MS else "OVER",
              UI_BUDGET_MS, max(v for k, v in big.items() if k.startswith("UI")) * 1000))
    print("why: supernet index lookup %.2f ms vs naive scan of every address %.0f ms: %.0fx faster"
          % (big["why (host)"] * 1000, naive * 1000, naive / big["why (host)"]))


if __name__ == "__main__":
    main()
