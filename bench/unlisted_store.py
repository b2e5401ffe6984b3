"""What storing og-dns's unlisted names costs the server: learned frames of 1,000 unlisted names each (og-dns's
most per spool file) through services/learned.apply, one transaction per frame, on SQLite (and PostgreSQL with
--database-url), first with names the table has never seen (inserts), then the same names again (updates); then
the housekeeper's prune of a table over its cap. No network, no namespaces.

    .venv/bin/python bench/unlisted_store.py [--frames 20] [--rows 100000] [--database-url URL]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from og_kernel import og_protocol  # noqa: E402
from server_app import create_app, init_db  # noqa: E402
from server_app.models import db, utcnow  # noqa: E402
from server_app.services import learned, unlisted  # noqa: E402

NAMES = 1000


def frame(batch, start, now):
    names = [{"name": "n%d.bench.example" % i, "count": 1, "first": now, "last": now}
             for i in range(start, start + NAMES)]
    return og_protocol.parse_agent_frame(og_protocol.learned(batch, {"unlisted": names}))


def timed(app, frames):
    times = []
    with app.app_context():
        for f in frames:
            t0 = time.perf_counter()
            learned.apply("gw1", f, app.config["OG"])
            times.append(time.perf_counter() - t0)
        db.session.remove()
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100000, help="rows over the cap for the prune")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"data_dir": tmp, "secret_key": "b" * 32, "resolver_enabled": False,
                          "database_url": args.database_url})
        init_db(app)
        now = int(time.time())
        new = timed(app, [frame("learned-%d-1-1.json" % i, i * NAMES, now) for i in range(args.frames)])
        again = timed(app, [frame("learned-%d-1-2.json" % i, i * NAMES, now) for i in range(args.frames)])
        with app.app_context():
            fill = args.rows + args.rows // 10 - unlisted.count_rows()
            for i in range(0, max(0, fill), NAMES):
                learned.apply("gw2", frame("learned-%d-2-1.json" % i, i, now - 60), app.config["OG"])
            before = unlisted.count_rows()
            t0 = time.perf_counter()
            gone = unlisted.prune(args.rows, 7, utcnow())
            prune = time.perf_counter() - t0
            after = unlisted.count_rows()
            db.session.remove()
        dialect = args.database_url.split(":")[0] or "sqlite"
        print("database %s, %d frames of %d unlisted names, one transaction each" % (dialect, args.frames, NAMES))
        for label, times in (("new names (insert)", new), ("same names again (update)", again)):
            print("  %-26s median %.1f ms a frame (%.1f us a name), max %.1f ms" % (
                label, statistics.median(times) * 1000, statistics.median(times) * 1e6 / NAMES, max(times) * 1000))
        print("  prune: %d rows -> %d (cap %d, %d dropped) in %.1f ms"
              % (before, after, args.rows, gone["cap"], prune * 1000))


if __name__ == "__main__":
    main()
