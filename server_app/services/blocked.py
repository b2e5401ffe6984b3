"""Refused attempts the gateways report, for the Blocked page and API, and turning one into an entry.

Each agent reads its gateway's og-blocked and og-observed sets on its counters cycle and sends what grew as
`blocked` frames (docs/protocol.md): per client address, destination, protocol and port, a count, the first
and last attempt. `ingest` sums them into one BlockedAttempt row per gateway and (client, destination, proto,
port, observed) with one upsert per frame; `observed` rows are what a gateway in observe mode let through but
would have refused. Storage is bounded (docs/ui.md, "Blocked"): `prune` (the housekeeper, every minute) deletes
rows whose last attempt is older than blocked_retention_days, then the rows seen longest ago beyond
blocked_max_rows. `allow` creates the entry for a row through entries.create (the normal path: validation,
revision, audit): for its destination, or for one of the names its gateway's DNS answered with that destination
(services/answers.py), which a page of rows carries as `names`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from sqlalchemy import and_, delete, false, func, or_, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from og_kernel.og_protocol import ProtocolError

from ..errors import RequestError
from ..extensions import db
from ..models import BlockedAttempt, utcnow
from . import answers, entries

# The "allow" choices of the page and the API: None = permanent.
DURATIONS = {"permanent": None, "1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1),
             "1w": dt.timedelta(weeks=1)}
PORTED = ("tcp", "udp", "sctp")   # protocols whose port an entry can scope (og_netpolicy port specs)
SORTS = ("newest", "busiest")
MAX_FILTER_ADDRESSES = 4096   # addresses a network or a name filter may stand for: each an index seek


class BlockedError(RequestError):
    """A refused request about blocked attempts: status, code and a message naming the value and the fix."""


def _when(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def _address(kind, value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ProtocolError("blocked %s %r is not an IP address" % (kind, value)) from None


def _upsert(rows):
    """INSERT ... ON CONFLICT (the unique key) add the counts and widen first/last, in the database's dialect."""
    table = BlockedAttempt.__table__
    name = db.engine.dialect.name
    if name == "mysql":
        stmt = mysql.insert(table)
        ins = stmt.inserted
        return stmt.on_duplicate_key_update(
            count=table.c.count + ins.count, bytes=table.c.bytes + ins.bytes,
            first_seen=func.least(table.c.first_seen, ins.first_seen),
            last_seen=func.greatest(table.c.last_seen, ins.last_seen)), rows
    stmt = (postgresql if name == "postgresql" else sqlite).insert(table)
    exc = stmt.excluded
    least, greatest = (func.least, func.greatest) if name == "postgresql" else (func.min, func.max)
    return stmt.on_conflict_do_update(
        index_elements=["gateway", "client", "destination", "proto", "port", "observed"],
        set_={"count": table.c.count + exc.count, "bytes": table.c.bytes + exc.bytes,
              "first_seen": least(table.c.first_seen, exc.first_seen),
              "last_seen": greatest(table.c.last_seen, exc.last_seen)}), rows


def ingest(gateway, frame, now=None):
    """Sum one blocked frame of `gateway` into its rows, in one transaction; returns the number of rows touched.

    Raises ProtocolError naming an attempt whose client or destination is not an IP address (nothing stored)."""
    now = now or utcnow()
    merged = {}
    for a in frame.attempts:
        key = (gateway, _address("client", a.client), _address("destination", a.destination), a.proto[:16],
               a.port[:32], bool(a.observed))
        # A first/last in the future (a gateway clock ahead) is taken as now: the page sorts by it.
        first, last = min(_when(a.first), now), min(_when(a.last or a.first), now)
        row = merged.get(key)
        if row is None:
            merged[key] = [a.count, a.bytes, first, max(first, last)]
        else:
            row[0] += a.count
            row[1] += a.bytes
            row[2] = min(row[2], first)
            row[3] = max(row[3], last)
    if not merged:
        return 0
    rows = [{"gateway": k[0], "client": k[1], "destination": k[2], "proto": k[3], "port": k[4], "observed": k[5],
             "count": v[0], "bytes": v[1], "first_seen": v[2], "last_seen": v[3]} for k, v in merged.items()]
    stmt, params = _upsert(rows)
    db.session.execute(stmt, params)
    db.session.commit()
    return len(rows)


def check_name(name):
    """A name filter or an "allow name" name: 1-255 characters without surrounding spaces."""
    if not isinstance(name, str) or not name.strip() or name.strip() != name or len(name) > 255:
        raise BlockedError(400, "invalid_name", "name %r must be 1-255 characters without surrounding spaces: a "
                           "part of a name (partner), or *.example.com for the names under example.com"
                           % (name[:300] if isinstance(name, str) else name,))
    return name


def query(client=None, gateway=None, destination=None, observed=None, sort="newest", page=1, per_page=50,
          name=None, named=None):
    """(rows, total) filtered by client (an address or a network), gateway (exact name), destination (an address
    or a network), name (its gateway's DNS answered a name containing it, or under *.example.com, with the
    destination; `named`: name_filter(name) already made, for a second query of the same page); observed None =
    both kinds. newest: last attempt first, then the busiest; busiest: count first, then the newest."""
    stmt = select(BlockedAttempt)
    for column, value in ((BlockedAttempt.client, client), (BlockedAttempt.destination, destination)):
        if value:
            stmt = stmt.where(_address_filter(column, value))
    if gateway:
        stmt = stmt.where(BlockedAttempt.gateway == gateway)
    if name:
        stmt = stmt.where(name_filter(name) if named is None else named)
    if observed is not None and name:
        # Hidden from the planner in coalesce(): SQLite otherwise walks the (observed, last_seen) index over every
        # row, where the name's destinations (a short list, by their index) should lead.
        stmt = stmt.where(func.coalesce(BlockedAttempt.observed, observed) == observed)
    elif observed is not None:
        stmt = stmt.where(BlockedAttempt.observed == observed)   # "= 0", not "IS 0": the index serves it
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar()
    order = ([BlockedAttempt.last_seen.desc(), BlockedAttempt.count.desc()] if sort == "newest"
             else [BlockedAttempt.count.desc(), BlockedAttempt.last_seen.desc()])
    rows = db.session.execute(stmt.order_by(*order, BlockedAttempt.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).scalars().all()
    return rows, total


def name_filter(name):
    """Rows whose gateway's DNS answered a name matching `name` with their destination: per gateway one indexed IN
    list of its addresses (at most MAX_FILTER_ADDRESSES, as for a network). Costs a scan of the answers' names."""
    found = answers.addresses_matching(check_name(name), MAX_FILTER_ADDRESSES)
    if found is None:
        raise BlockedError(400, "invalid_filter", "name %r matches more than %s addresses the gateways' DNS "
                           "answered: give more of the name (cdn.partner.example rather than partner)"
                           % (name, "{:,}".format(MAX_FILTER_ADDRESSES)))
    if not found:
        return false()
    # Led by the destination index: the gateways hidden from the planner in coalesce() (given them, SQLite took the
    # unique key's gateway prefix, a scan of that gateway's rows; and the query hides observed likewise, whose index
    # it walked over every row instead: 0.3 s at 100,000 rows). At most 2 x 4,096 parameters, under every
    # database's limit.
    return and_(BlockedAttempt.destination.in_(sorted({a for addresses in found.values() for a in addresses})),
                or_(*(and_(func.coalesce(BlockedAttempt.gateway, "") == gateway,
                           BlockedAttempt.destination.in_(addresses)) for gateway, addresses in sorted(found.items()))))


def _address_filter(column, value):
    """An address matches itself; a network (up to 4,096 addresses) each address in it."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise BlockedError(400, "invalid_filter", "%s %r must be an IP address such as 198.51.100.20 or a network "
                           "such as 10.88.0.0/24" % (column.key, value)) from None
    if net.num_addresses == 1:
        return column == str(net.network_address)
    if net.num_addresses > MAX_FILTER_ADDRESSES:
        raise BlockedError(400, "invalid_filter", "%s network %s is wider than 4,096 addresses: give a /20 or "
                           "narrower (IPv6: a /116 or narrower)" % (column.key, net))
    return column.in_([str(a) for a in net])   # one indexed IN list, not an OR of 4,096 comparisons


def names_of(rows):
    """{(gateway, destination): [name, ...]} for a page of rows (answers.names_for: one query)."""
    return answers.names_for((r.gateway, r.destination) for r in rows)


def to_json(row, iso, names=()):
    return {"id": row.id, "gateway": row.gateway, "client": row.client, "destination": row.destination,
            "proto": row.proto, "port": row.port, "observed": row.observed, "count": int(row.count),
            "bytes": int(row.bytes), "first_seen": iso(row.first_seen), "last_seen": iso(row.last_seen),
            "entry": entry_spec(row), "names": list(names)}


def entry_spec(row):
    """The entry "allow" would create: the destination, scoped to the port for tcp/udp/sctp."""
    ports = ["%s/%s" % (row.port, row.proto)] if row.proto in PORTED and row.port.isdigit() else []
    return {"target": row.destination, "ports": ports}


def allow(row_id, duration, config, creator, now=None, name=None):
    """Create the entry a row asks for through entries.create (validated, revision, audited); returns
    (entry, revision, row). duration: permanent, 1h, 1d or 1w; name: instead of the destination, a domain entry
    for that name, which the row's gateway's DNS must have answered with the destination (no wildcard)."""
    if duration not in DURATIONS:
        raise BlockedError(400, "invalid_duration", "duration %r must be one of %s" % (
            duration, ", ".join(DURATIONS)))
    if name is not None:
        check_name(name)
        if name.startswith("*"):
            raise BlockedError(400, "invalid_name", "name %r: allow names one at a time from here, not a wildcard; "
                               "create a wildcard entry with POST /api/v1/entries" % name)
    row = db.session.get(BlockedAttempt, row_id)
    if row is None:
        raise BlockedError(404, "not_found", "blocked attempt %d does not exist (it may have been pruned)" % row_id)
    spec = entry_spec(row)
    via = ""
    if name is not None:
        if not answers.answered(row.gateway, row.destination, name):
            known = names_of([row]).get((row.gateway, row.destination), [])
            raise BlockedError(400, "invalid_name", "name %r is not a name %s's DNS answered with %s; %s" % (
                name, row.gateway, row.destination, "give one of " + ", ".join(known) if known
                else "it answered none (it may have been pruned): allow the address instead"))
        spec = dict(spec, target=answers.normalise(name))
        via = "; %s's DNS answered %s with %s" % (row.gateway, spec["target"], row.destination)
    body = dict(spec, comment="allowed from the Blocked page: %s from %s via %s (%d attempt%s)%s" % (
        "observed" if row.observed else "refused", row.client, row.gateway, row.count, "" if row.count == 1 else "s",
        via))
    if DURATIONS[duration] is not None:
        body["expires_at"] = ((now or utcnow()) + DURATIONS[duration]).replace(microsecond=0).isoformat() + "Z"
    entry, revision = entries.create(body, config, creator)
    return entry, revision, row


def prune(config, now=None):
    """Delete rows older than blocked_retention_days, then the oldest beyond blocked_max_rows; returns how many."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=config["blocked_retention_days"])
    gone = db.session.execute(delete(BlockedAttempt).where(BlockedAttempt.last_seen < cutoff)).rowcount
    cap = config["blocked_max_rows"]
    count = db.session.execute(select(func.count(BlockedAttempt.id))).scalar()
    if count > cap:
        # The newest `cap` rows stay; the id of the last one kept is the boundary (ties on last_seen by id).
        keep = select(BlockedAttempt.id).order_by(BlockedAttempt.last_seen.desc(), BlockedAttempt.id.desc()) \
            .limit(cap).subquery()
        gone += db.session.execute(delete(BlockedAttempt).where(BlockedAttempt.id.not_in(select(keep.c.id)))
                                   .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return gone
