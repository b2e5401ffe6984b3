"""Names no entry allows that clients asked the gateways' DNS forwarders for (og-dns's "unlisted" counts).

og-dns counts, per name, the queries that match no domain entry and writes the counts of each second into its
spool; the agent sends each spool file as one learned frame (docs/protocol.md). `record` adds a frame's counts,
within the frame's own transaction (services/learned.py), to one row per gateway and name: count, first and
last seen. A frame sent again because its ack was lost is recognised by its batch name (the newest
KEEP_BATCHES batches of each gateway are remembered) and adds nothing. `prune` (the housekeeper) keeps the
table bounded: rows last seen more than dns_unlisted_retention_days ago go, then, beyond dns_unlisted_max_rows,
the rows of the oldest last_seen. `query` serves GET /api/v1/dns/unlisted. docs/dns.md, "Unlisted names".
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, bindparam, delete, func, or_, select

from ..extensions import db
from ..models import UnlistedBatch, UnlistedName

TABLE = UnlistedName.__table__
# The count is added in SQL, so two writers of one row (a gateway's frames on two replicas) lose no queries.
UPDATE = TABLE.update().where(TABLE.c.id == bindparam("b_id")).values(
    count=TABLE.c.count + bindparam("b_count"), first_seen=bindparam("b_first"), last_seen=bindparam("b_last"))
# A resent frame is one of the (at most 8) the agent had in flight when its session ended: 64 covers them.
KEEP_BATCHES = 64
CHUNK = 500
SORTS = {"newest": (UnlistedName.last_seen.desc(), UnlistedName.id.desc()),
         "busiest": (UnlistedName.count.desc(), UnlistedName.last_seen.desc(), UnlistedName.id.desc())}


def _when(epoch, now):
    """An epoch second of the frame as a naive UTC time, never later than the server's now (a gateway clock
    ahead would otherwise keep its rows newest and past the retention)."""
    return min(dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None), now)


def normalise(name):
    """How a name is stored and matched: lower case, without its final dot; the root name as "."."""
    return name.lower().rstrip(".") or "."


def record(gateway, batch, items, now):
    """Add a frame's unlisted items to `gateway`'s rows (in the caller's transaction); return the number of
    queries added (0 for a batch already counted)."""
    if not items:
        return 0
    if db.session.execute(select(UnlistedBatch.id).where(UnlistedBatch.gateway == gateway,
                                                         UnlistedBatch.batch == batch)).first() is not None:
        return 0
    db.session.add(UnlistedBatch(gateway=gateway, batch=batch, at=now))
    merged = {}
    for item in items:
        name = normalise(item.name)
        first, last = _when(item.first, now), _when(item.last, now)
        have = merged.get(name)
        merged[name] = [item.count, first, last] if have is None else \
            [have[0] + item.count, min(have[1], first), max(have[2], last)]
    names = sorted(merged)
    for start in range(0, len(names), CHUNK):
        chunk = names[start:start + CHUNK]
        existing = {row.name: row for row in db.session.execute(
            select(TABLE.c.id, TABLE.c.name, TABLE.c.first_seen, TABLE.c.last_seen).where(
                TABLE.c.gateway == gateway, TABLE.c.name.in_(chunk)))}
        inserts, updates = [], []
        for name in chunk:
            count, first, last = merged[name]
            row = existing.get(name)
            if row is None:
                inserts.append({"gateway": gateway, "name": name, "count": count, "first_seen": first,
                                "last_seen": last})
            else:
                updates.append({"b_id": row.id, "b_count": count, "b_first": min(row.first_seen, first),
                                "b_last": max(row.last_seen, last)})
        # One executemany each: an ORM object per name cost 3-4 times as much (bench/results/unlisted.md).
        if inserts:
            db.session.execute(TABLE.insert(), inserts)
        if updates:
            db.session.execute(UPDATE, updates)
    cutoff = db.session.execute(select(UnlistedBatch.id).where(UnlistedBatch.gateway == gateway)
                                .order_by(UnlistedBatch.id.desc()).offset(KEEP_BATCHES).limit(1)).scalar()
    if cutoff is not None:
        db.session.execute(delete(UnlistedBatch).where(UnlistedBatch.gateway == gateway,
                                                       UnlistedBatch.id <= cutoff))
    return sum(v[0] for v in merged.values())


def prune_by_last_seen(model, max_rows, retention_days, now):
    """Delete `model`'s rows last seen before the retention, then the oldest last seen beyond max_rows (newest
    first: last_seen, then id); commit and return {"retention": n, "cap": n}. Shared by the tables that keep
    what gateways report by when it was last seen (unlisted names, DNS answers)."""
    gone = {"retention": 0, "cap": 0}
    gone["retention"] = db.session.execute(delete(model).where(
        model.last_seen < now - dt.timedelta(days=retention_days))).rowcount or 0
    # The first row beyond the cap, newest first; it and every row after it go.
    edge = db.session.execute(select(model.last_seen, model.id)
                              .order_by(model.last_seen.desc(), model.id.desc()).offset(max_rows).limit(1)).first()
    if edge is not None:
        gone["cap"] = db.session.execute(delete(model).where(or_(
            model.last_seen < edge.last_seen,
            and_(model.last_seen == edge.last_seen, model.id <= edge.id)))).rowcount or 0
    db.session.commit()
    return gone


def prune(max_rows, retention_days, now):
    """Delete the rows last seen before the retention, then the oldest last seen beyond max_rows; commit and
    return {"retention": n, "cap": n}."""
    return prune_by_last_seen(UnlistedName, max_rows, retention_days, now)


def query(gateway=None, name=None, since=None, sort="newest", page=1, per_page=50):
    """(rows, total) of one page: `name` a substring, or `*.example.com` for the names under example.com."""
    stmt = select(UnlistedName)
    if gateway:
        stmt = stmt.where(UnlistedName.gateway == gateway)
    if name:
        name = name.lower()
        if name.startswith("*."):
            stmt = stmt.where(UnlistedName.name.endswith(normalise(name[1:]), autoescape=True))
        else:
            stmt = stmt.where(UnlistedName.name.contains(name, autoescape=True))
    if since is not None:
        stmt = stmt.where(UnlistedName.last_seen >= since)
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.session.execute(stmt.order_by(*SORTS[sort]).offset((page - 1) * per_page).limit(per_page)).scalars()
    return list(rows), total


def count_rows():
    return db.session.execute(select(func.count()).select_from(UnlistedName)).scalar_one()


def to_json(row):
    return {"gateway": row.gateway, "name": row.name, "count": int(row.count),
            "first_seen": row.first_seen.isoformat() + "Z", "last_seen": row.last_seen.isoformat() + "Z"}
