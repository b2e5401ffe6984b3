"""What storing og-dns's unlisted names costs the server: learned frames of 1,000 unlisted names each (og-dns's
most per spool file) through services/learned.apply, one transaction per frame, on SQLite (and PostgreSQL with
--database-url), first with names the table has never seen (inserts), then the same names again (updates); then
the housekeeper's prune of a table over its cap. No network, no namespaces.

The baseline, run in the same process on the same database: the floor of the database itself, the same 1,000
rows a frame inserted and then updated with one executemany each into a bare table of the same columns (no
checks, no batch bookkeeping, no ORM); each figure is printed as a ratio to it.

    .venv/bin/python bench/unlisted_store.py [--frames 20] [--rows 100000] [--database-url URL]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, bindparam  # noqa: E402

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


FLOOR = Table("bench_unlisted_floor", MetaData(), Column("id", Integer, primary_key=True),
              Column("gateway", String(128)), Column("name", String(255), index=True), Column("count", BigInteger),
              Column("first_seen", DateTime), Column("last_seen", DateTime))


def floor(app, frames):
    """(insert times, update times) a frame of the bare table: what the database itself needs for the rows."""
    inserts, updates = [], []
    with app.app_context():
        FLOOR.create(db.engine)
        at = utcnow()
        for f in range(frames):
            rows = [{"gateway": "gw1", "name": "n%d.bench.example" % i, "count": 1, "first_seen": at,
                     "last_seen": at} for i in range(f * NAMES, (f + 1) * NAMES)]
            t0 = time.perf_counter()
            with db.engine.begin() as conn:
                conn.execute(FLOOR.insert(), rows)
            inserts.append(time.perf_counter() - t0)
        update = FLOOR.update().where(FLOOR.c.gateway == bindparam("g"), FLOOR.c.name == bindparam("n")).values(
            count=FLOOR.c.count + 1, last_seen=bindparam("at"))
        for f in range(frames):
            rows = [{"g": "gw1", "n": "n%d.bench.example" % i, "at": at} for i in range(f * NAMES, (f + 1) * NAMES)]
            t0 = time.perf_counter()
            with db.engine.begin() as conn:
                conn.execute(update, rows)
            updates.append(time.perf_counter() - t0)
        FLOOR.drop(db.engine)
    return inserts, updates


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
        floor_insert, floor_update = floor(app, args.frames)
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
        for label, times, base in (("new names (insert)", new, floor_insert),
                                   ("same names again (update)", again, floor_update)):
            print("  %-26s median %.1f ms a frame (%.1f us a name), max %.1f ms; the database's floor %.1f ms: "
                  "%.1fx" % (label, statistics.median(times) * 1000, statistics.median(times) * 1e6 / NAMES,
                             max(times) * 1000, statistics.median(base) * 1000,
                             statistics.median(times) / statistics.median(base)))
        print("  prune: %d rows -> %d (cap %d, %d dropped) in %.1f ms"
              % (before, after, args.rows, gone["cap"], prune * 1000))


if __name__ == "__main__":
    main()
