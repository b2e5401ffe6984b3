"""Which names each gateway's DNS forwarder answered with which addresses: the DNS name of a blocked destination.

og-dns spools, per query name, the addresses its forwarded answers gave (a listed name's too: its address can
still be refused on a port the entry does not allow), and the agent sends them in its learned frames ("answers",
docs/protocol.md). `record` upserts them, within the frame's own transaction (services/learned.py), into one row
per gateway, address and name (first and last seen): a frame sent again adds nothing new, so no batch bookkeeping
is needed. `names_for` gives the Blocked rows of a page their names (the most recent NAMES_SHOWN per gateway and
destination, one query), `addresses_matching` filters the Blocked list by name, and `prune` (the housekeeper) keeps the table
bounded: rows last seen more than dns_answers_retention_days ago go, then, beyond dns_answers_max_rows, the rows
of the oldest last_seen. docs/dns.md, "Answers"; docs/ui.md, "Blocked".
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..extensions import db
from ..models import DnsAnswer
from .unlisted import normalise, prune_by_last_seen

TABLE = DnsAnswer.__table__
NAMES_SHOWN = 5           # names per blocked row, the most recent first
CHUNK = 500
NEWEST = (DnsAnswer.last_seen.desc(), DnsAnswer.id.desc())


def _when(epoch, now):
    """An epoch second of the frame as a naive UTC time, never later than the server's now."""
    return min(dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None), now)


def _upsert():
    """INSERT ... ON CONFLICT (gateway, address, name) move last_seen on, in the database's dialect."""
    name = db.engine.dialect.name
    if name == "mysql":
        stmt = mysql.insert(TABLE)
        return stmt.on_duplicate_key_update(last_seen=func.greatest(TABLE.c.last_seen, stmt.inserted.last_seen))
    stmt = (postgresql if name == "postgresql" else sqlite).insert(TABLE)
    greatest = func.greatest if name == "postgresql" else func.max
    return stmt.on_conflict_do_update(index_elements=["gateway", "address", "name"],
                                      set_={"last_seen": greatest(TABLE.c.last_seen, stmt.excluded.last_seen)})


def record(gateway, items, now):
    """Upsert a frame's answers (og_protocol.Answer) for `gateway` in the caller's transaction; return the number
    of (address, name) rows written."""
    merged = {}
    for item in items:
        name, last = normalise(item.name), _when(item.last, now)
        for address in item.addresses:
            key = (address, name)
            merged[key] = max(merged.get(key, last), last)
    keys = sorted(merged)    # one order for every writer: two replicas' upserts never wait on each other in a cycle
    stmt = _upsert()
    for start in range(0, len(keys), CHUNK):
        db.session.execute(stmt, [{"gateway": gateway, "address": a, "name": n, "first_seen": merged[(a, n)],
                                   "last_seen": merged[(a, n)]} for a, n in keys[start:start + CHUNK]])
    return len(keys)


def names_for(pairs):
    """{(gateway, address): [name, ...]} for the (gateway, address) pairs of a page of blocked rows, the most
    recent NAMES_SHOWN of each, in one query (each pair an index seek on the unique key)."""
    pairs = set(pairs)
    if not pairs:
        return {}
    # Two IN lists, not a row-value IN: SQLite seeks the unique key's (gateway, address) prefix for each
    # combination of two IN lists, but scans the whole index for a row-value IN list. A page has a gateway or
    # two, so the combinations that are no pair of the page are few; they are dropped below.
    rank = func.row_number().over(partition_by=(DnsAnswer.gateway, DnsAnswer.address), order_by=NEWEST).label("r")
    ranked = select(DnsAnswer.gateway, DnsAnswer.address, DnsAnswer.name, rank).where(
        DnsAnswer.gateway.in_(sorted({g for g, _a in pairs})),
        DnsAnswer.address.in_(sorted({a for _g, a in pairs}))).subquery()
    found = {}
    for row in db.session.execute(select(ranked.c.gateway, ranked.c.address, ranked.c.name)
                                  .where(ranked.c.r <= NAMES_SHOWN).order_by(ranked.c.gateway, ranked.c.address,
                                                                             ranked.c.r)):
        if (row.gateway, row.address) in pairs:
            found.setdefault((row.gateway, row.address), []).append(row.name)
    return found


def name_condition(column, name):
    """`column` matches `name`: a part of it (partner), or *.example.com for the names under example.com."""
    name = name.lower()
    if name.startswith("*."):
        return column.endswith(normalise(name[1:]), autoescape=True)
    return column.contains(name.rstrip(".") or ".", autoescape=True)


def addresses_matching(name, limit):
    """{gateway: [address, ...]} that each gateway's DNS answered a name matching `name` with, or None when they
    are more than `limit` addresses. One scan of the answers (a LIKE '%x%' uses no index); the caller then seeks
    its own rows by address: a semi-join probing every blocked row cost 0.4-0.7 s at 100,000 rows each."""
    found, count = {}, 0
    for row in db.session.execute(select(DnsAnswer.gateway, DnsAnswer.address).where(
            name_condition(DnsAnswer.name, name)).distinct().limit(limit + 1)):
        found.setdefault(row.gateway, []).append(row.address)
        count += 1
    return None if count > limit else found


def answered(gateway, address, name):
    """True if `gateway`'s DNS answered `name` (normalised) with `address`."""
    return db.session.execute(select(DnsAnswer.id).where(
        DnsAnswer.gateway == gateway, DnsAnswer.address == address, DnsAnswer.name == normalise(name))).first() \
        is not None


def prune(max_rows, retention_days, now):
    """Delete the rows last seen before the retention, then the oldest last seen beyond max_rows; commit and
    return {"retention": n, "cap": n}."""
    return prune_by_last_seen(DnsAnswer, max_rows, retention_days, now)


def count_rows():
    return db.session.execute(select(func.count()).select_from(DnsAnswer)).scalar_one()
