"""The resolver at scale: 10,000 domain entries resolved against a local dnsmasq, one full pass.

Reports the wall time per cycle and the CPU used (the process's user+system time, all threads), with the
same pass run with concurrency 1 as the baseline in the same process.

    .venv/bin/python bench/resolver.py [--names 10000]
"""

import argparse
import datetime as dt
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from server_app import create_app, init_db  # noqa: E402
from server_app.models import Entry, db, utcnow  # noqa: E402
from server_app.services import changelog, entries  # noqa: E402
from server_app.services.resolver import Resolver, make_dns, resolve  # noqa: E402


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=10000)
    args = parser.parse_args()
    n = args.names
    with tempfile.TemporaryDirectory() as tmp:
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as fh:
            for i in range(n):
                # two addresses per name, synthetic public space
                fh.write("11.%d.%d.%d name%d.bench.test\n" % (i >> 16 & 255, i >> 8 & 255, i & 255, i))
                fh.write("23.%d.%d.%d name%d.bench.test\n" % (i >> 16 & 255, i >> 8 & 255, i & 255, i))
        port = free_udp_port()
        dnsmasq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--addn-hosts=" + hosts, "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % port,
             "--local=/test/", "--local-ttl=60", "--cache-size=0", "--dns-forward-max=1000", "--user=root",
             "--group=root", "--pid-file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            res = make_dns({"dns_servers": ["127.0.0.1:%d" % port], "dns_timeout": 1.0, "dns_tries": 2})
            for dummy in range(100):
                if resolve(res, "name0.bench.test", False).status == "ok":
                    break
                time.sleep(0.1)
            app = create_app(config={"data_dir": tmp, "secret_key": "b" * 32, "resolver_enabled": False,
                                     "database_url": "sqlite:///%s/bench.db" % tmp,
                                     "dns_servers": ["127.0.0.1:%d" % port], "dns_timeout": 1.0,
                                     "resolve_concurrency": 32})
            init_db(app)
            with app.app_context():
                entries.import_entries([{"target": "name%d.bench.test" % i} for i in range(n)], app.config["OG"],
                                       "bench")
                rows = []
                for label, concurrency in (("first pass", 32), ("per-entry", 32), ("steady", 32), ("steady", 1)):
                    app.config["OG"]["resolve_concurrency"] = concurrency
                    resolver = Resolver(app)
                    if label == "per-entry":   # baseline: every answer in its own transaction
                        resolver.apply_unchanged = lambda results, now: results
                    db.session.query(Entry).update({Entry.next_resolve_at: utcnow() - dt.timedelta(seconds=1)})
                    db.session.commit()
                    c0, t0 = cpu(), time.perf_counter()
                    done = resolver.run_once(now=utcnow())
                    rows.append((label, concurrency, done, time.perf_counter() - t0, cpu() - c0))
                published = len(changelog.published())
        finally:
            dnsmasq.terminate()
            dnsmasq.wait()
    print("resolver: %d names (A and AAAA each), local dnsmasq, SQLite; %d addresses published" % (n, published))
    print("%-12s %12s %8s %10s %10s %12s" % ("pass", "concurrency", "names", "wall s", "cpu s", "names/s"))
    for label, concurrency, done, wall, used in rows:
        print("%-12s %12d %8d %10.2f %10.2f %12.0f" % (label, concurrency, done, wall, used, done / wall))
    baseline, steady, serial = rows[1][3], rows[2][3], rows[3][3]
    print("steady pass (nothing changed): bulk path %.1fx faster than one transaction per name (baseline); "
          "a pass of %d names takes %.0f%% of the 60 s interval; concurrency 1 vs 32 on a local DNS server: %.2fx"
          % (baseline / steady, n, 100 * steady / 60, serial / steady))


if __name__ == "__main__":
    main()
