"""Traffic history for the UI: the agents' counters frames turned into per-minute samples.

Agents send, every 15 s, the bytes and packets each element carried since their previous frame
(`"increments": true`, docs/protocol.md). Older agents send totals since they started; those are turned into
increments against the previous frame of the same agent run (the first frame of a run seen by this process
only sets the baseline). Increments are summed in memory per (gateway, element, minute) and written in one
transaction every few seconds by the hub; samples older than `traffic_retention_days` are pruned.

Downsampling (rollup()): samples younger than MINUTE_KEEP (25 hours) stay one per minute; older ones are summed
into one row per hour, stored at the hour's first minute, so a week costs 25 * 60 + 143 rows per (gateway,
element) instead of 10,080, and the day's window still sees minutes. The housekeeper rolls up and prunes every
hour. series() turns the samples of a window into rates (per second) in buckets of BUCKETS seconds, on a UTC
axis that ends at now.

Agents that speak the "clients" feature also send, on the same cycle, what each client address sent and received
through the gateway (clients frames); those are summed the same way per (gateway, client, minute) into
ClientTraffic, rolled up and pruned with the rest, and shown as top clients and per-client series.

Each flush also records which entries the traffic belongs to (EntryTraffic): the entries that produced the
element when the server took the frame in, by id and name, so the traffic of an entry stays its own after the
entry is deleted or expires. An element several entries produce is recorded for each of them as shared: each
entry shows those bytes marked shared, and totals (from TrafficSample, per element) count them once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import logging
import threading

from sqlalchemy import case, delete, func, insert, select

from og_kernel.og_elements import Element
from og_kernel.og_netpolicy import TargetError

from ..extensions import db
from ..models import ClientTraffic, Entry, EntryElement, EntryTraffic, TrafficSample, utcnow
from .entries import describe

log = logging.getLogger(__name__)
FIELDS = ("out_bytes", "in_bytes", "out_packets", "in_packets")
WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1), "7d": dt.timedelta(days=7)}
BUCKETS = {"1h": 60, "24h": 600, "7d": 3600}     # seconds per point of a window's series
MINUTE_KEEP = dt.timedelta(hours=25)           # per-minute samples kept this long, then one row per hour
HOUR = dt.timedelta(hours=1)
MAX_ELEMENT = 96
# Unwritten (gateway, element, minute) rows kept while the database is down; beyond this, new ones are dropped
# (and counted) rather than letting memory grow without end.
MAX_PENDING = 500000
# Elements whose last known holders are kept for traffic reported after its entry was deleted (the agent's
# frame comes up to 15 s after the bytes); beyond this the memory is started afresh.
MAX_HOLDERS = 200000


class TrafficError(ValueError):
    """A bad counters frame or query: `code` and `status` are the API's error code and HTTP status."""

    def __init__(self, message, code="invalid_filter", status=400):
        super().__init__(message)
        self.code, self.status = code, status


class Traffic:
    """One per process: accumulates increments and writes them in batches."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = {}        # (gateway, element, minute) -> [out_bytes, in_bytes, out_packets, in_packets]
        self.client_pending = {}  # (gateway, client address, minute) -> the same four sums
        self.baselines = {}      # gateway -> (boot, {element: [totals]}) for agents that send totals
        self.holders = {}        # element -> [(entry id, entry name)] when it last carried traffic

    def ingest(self, gateway, msg, now=None):
        """Add one counters frame; raise TrafficError for a malformed one (nothing of it is kept then)."""
        counters = msg.get("counters")
        if not isinstance(counters, dict):
            raise TrafficError("counters must be an object keyed by element")
        values = {}
        for element, c in counters.items():
            if not isinstance(element, str) or len(element) > MAX_ELEMENT or not isinstance(c, dict):
                raise TrafficError("counters for %r must be an object of %s" % (str(element)[:100], ", ".join(FIELDS)))
            try:
                row = [int(c.get(f, 0)) for f in FIELDS]
            except (TypeError, ValueError):
                raise TrafficError("counters for %r must be whole numbers" % element)
            if min(row) < 0 or max(row) >= 1 << 62:
                raise TrafficError("counters for %r must lie within 0-2^62" % element)
            values[element] = row
        if msg.get("increments") is not True:
            values = self._increments(gateway, str(msg.get("boot", "")), values)
        minute = (now or utcnow()).replace(second=0, microsecond=0)
        with self.lock:
            for element, row in values.items():
                if any(row):
                    key = (gateway, element, minute)
                    if key not in self.pending and len(self.pending) >= MAX_PENDING:
                        continue
                    acc = self.pending.setdefault(key, [0, 0, 0, 0])
                    for i, v in enumerate(row):
                        acc[i] += v

    def ingest_clients(self, gateway, frame, now=None):
        """Add one clients frame (og_protocol.Clients); raise TrafficError naming a client that is no address."""
        values = {}
        for use in frame.clients:
            try:
                client = str(ipaddress.ip_address(use.client))
            except ValueError:
                raise TrafficError("clients frame: client %r is no IP address" % use.client[:64]) from None
            row = values.setdefault(client, [0, 0, 0, 0])
            for i, v in enumerate((use.out_bytes, use.in_bytes, use.out_packets, use.in_packets)):
                row[i] += v
        minute = (now or utcnow()).replace(second=0, microsecond=0)
        with self.lock:
            for client, row in values.items():
                if any(row):
                    key = (gateway, client, minute)
                    if key not in self.client_pending and len(self.client_pending) >= MAX_PENDING:
                        continue
                    acc = self.client_pending.setdefault(key, [0, 0, 0, 0])
                    for i, v in enumerate(row):
                        acc[i] += v

    def _increments(self, gateway, boot, totals):
        with self.lock:
            seen_boot, previous = self.baselines.get(gateway, (None, {}))
            self.baselines[gateway] = (boot, totals)
        if seen_boot != boot:
            return {}
        out = {}
        for element, row in totals.items():
            before = previous.get(element)
            # A counter that went down was reset (the set was swapped by a snapshot): all of it is new.
            out[element] = [v - b if b is not None and v >= b else v
                            for v, b in zip(row, before or [None] * 4)]
        return out

    def flush(self):
        """Write what was accumulated (per element and per client) in one transaction; on failure keep it for the
        next try."""
        with self.lock:
            pending, self.pending = self.pending, {}
            clients, self.client_pending = self.client_pending, {}
        if not pending and not clients:
            return 0
        try:
            _add_rows(TrafficSample, "element", pending)
            _add_rows(ClientTraffic, "client", clients)
            self._attribute(pending)
            db.session.commit()
        except Exception:
            db.session.rollback()
            with self.lock:
                for kept, failed in ((self.pending, pending), (self.client_pending, clients)):
                    for key, row in failed.items():
                        acc = kept.setdefault(key, [0, 0, 0, 0])
                        for i, v in enumerate(row):
                            acc[i] += v
            raise
        return len(pending) + len(clients)

    def _attribute(self, pending):
        """Within flush()'s transaction: add the pending rows to the EntryTraffic of the entries holding them."""
        elements = sorted({element for _gateway, element, _minute in pending})
        current = {}
        for i in range(0, len(elements), 500):
            for element, entry in db.session.execute(
                    select(EntryElement.element, Entry).join(Entry, Entry.id == EntryElement.entry_id)
                    .where(EntryElement.element.in_(elements[i:i + 500]))):
                current.setdefault(element, []).append((entry.id, describe(entry)))
        if len(self.holders) > MAX_HOLDERS:
            self.holders = {}
        self.holders.update(current)
        sums = {}
        for (gateway, element, minute), row in pending.items():
            # No holder now: the entry went between the traffic and this flush; its last known holders keep it.
            holders = current.get(element) or self.holders.get(element) or ()
            for entry_id, name in holders:
                acc = sums.setdefault((entry_id, gateway, minute, len(holders) > 1), [name, 0, 0, 0, 0])
                for i, v in enumerate(row):
                    acc[i + 1] += v
        if not sums:
            return
        keys = sorted(sums)
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            existing = {(r.entry_id, r.gateway, r.minute, r.shared): r for r in db.session.execute(
                select(EntryTraffic).where(EntryTraffic.entry_id.in_({k[0] for k in chunk}),
                                           EntryTraffic.minute.in_({k[2] for k in chunk}))).scalars()}
            for key in chunk:
                name, *row = sums[key]
                record = existing.get(key)
                if record is None:
                    db.session.add(EntryTraffic(entry_id=key[0], entry=name, gateway=key[1], minute=key[2],
                                                shared=key[3], **dict(zip(FIELDS, row))))
                else:
                    for f, v in zip(FIELDS, row):
                        setattr(record, f, getattr(record, f) + v)

    @staticmethod
    def rollup(now=None, keep=MINUTE_KEEP):
        """Sum the per-minute rows of every hour that ended more than `keep` ago into one row at the hour's
        first minute (both tables). Idempotent: an hour already rolled up is skipped, rows a late flush added to
        a rolled-up hour are folded in at the next run. Returns the number of rows removed."""
        cutoff = _floor_hour((now or utcnow()) - keep)
        removed = 0
        for model, keys in ((TrafficSample, ("gateway", "element")),
                            (EntryTraffic, ("entry_id", "gateway", "shared")),
                            (ClientTraffic, ("gateway", "client"))):
            oldest = db.session.execute(select(func.min(model.minute)).where(model.minute < cutoff)).scalar()
            hour = _floor_hour(oldest) if oldest is not None else cutoff
            while hour < cutoff:
                removed += _rollup_hour(model, keys, hour)
                hour += HOUR
            db.session.commit()
        return removed

    @staticmethod
    def prune(days, now=None):
        cutoff = (now or utcnow()) - dt.timedelta(days=days)
        deleted = db.session.query(TrafficSample).filter(TrafficSample.minute < cutoff).delete(
            synchronize_session=False)
        db.session.query(EntryTraffic).filter(EntryTraffic.minute < cutoff).delete(synchronize_session=False)
        db.session.query(ClientTraffic).filter(ClientTraffic.minute < cutoff).delete(synchronize_session=False)
        db.session.commit()
        return deleted


def _add_rows(model, column, pending):
    """Within flush(): add pending {(gateway, key, minute): sums} to the rows of `model` keyed by `column`."""
    groups = {}
    for (gateway, key, minute), row in pending.items():
        groups.setdefault((gateway, minute), {})[key] = row
    keyed = getattr(model, column)
    for (gateway, minute), rows in groups.items():
        names = list(rows)
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            existing = {getattr(s, column): s for s in db.session.execute(select(model).where(
                model.gateway == gateway, model.minute == minute, keyed.in_(chunk))).scalars()}
            for key in chunk:
                row = rows[key]
                sample = existing.get(key)
                if sample is None:
                    db.session.add(model(gateway=gateway, minute=minute, **{column: key}, **dict(zip(FIELDS, row))))
                else:
                    for f, v in zip(FIELDS, row):
                        setattr(sample, f, getattr(sample, f) + v)


def _floor_hour(value):
    return value.replace(minute=0, second=0, microsecond=0)


def _rollup_hour(model, keys, hour):
    """Within rollup(): replace the rows of [hour, hour + 1 h) of `model` by one per key; 0 when already one."""
    in_hour = (model.minute >= hour, model.minute < hour + HOUR)
    if not db.session.execute(select(func.count()).select_from(model).where(
            model.minute > hour, model.minute < hour + HOUR)).scalar():
        return 0
    columns = [getattr(model, k) for k in keys]
    names = [func.max(model.entry)] if model is EntryTraffic else []
    rows = db.session.execute(select(*columns, *names, *[func.sum(getattr(model, f)) for f in FIELDS])
                              .where(*in_hour).group_by(*columns)).all()
    count = db.session.execute(delete(model).where(*in_hour)).rowcount
    values = []
    for row in rows:
        record = dict(zip(keys, row[:len(keys)]), minute=hour,
                      **dict(zip(FIELDS, (int(v or 0) for v in row[len(keys) + len(names):]))))
        if names:
            record["entry"] = row[len(keys)]
        values.append(record)
    for i in range(0, len(values), 500):
        db.session.execute(insert(model), values[i:i + 500])
    return count - len(values)


def window(name):
    if name not in WINDOWS:
        raise TrafficError("window %r must be one of %s" % (name, ", ".join(WINDOWS)), "invalid_window")
    return utcnow() - WINDOWS[name]


def _sums():
    return [func.sum(getattr(TrafficSample, f)).label(f) for f in FIELDS]


def top_destinations(since, gateway=None, limit=20):
    """[(element, out_bytes, in_bytes, out_packets, in_packets)] by total bytes, largest first."""
    total = func.sum(TrafficSample.out_bytes + TrafficSample.in_bytes)
    stmt = select(TrafficSample.element, *_sums()).where(TrafficSample.minute >= since)
    if gateway:
        stmt = stmt.where(TrafficSample.gateway == gateway)
    return [tuple(r) for r in db.session.execute(
        stmt.group_by(TrafficSample.element).order_by(total.desc()).limit(limit))]


def top_clients(since, gateway=None, limit=20):
    """[(client, out_bytes, in_bytes, out_packets, in_packets)] by total bytes, largest first (then by address)."""
    total = func.sum(ClientTraffic.out_bytes + ClientTraffic.in_bytes)
    stmt = select(ClientTraffic.client, *[func.sum(getattr(ClientTraffic, f)).label(f) for f in FIELDS]).where(
        ClientTraffic.minute >= since)
    if gateway:
        stmt = stmt.where(ClientTraffic.gateway == gateway)
    return [(r[0],) + tuple(int(v or 0) for v in r[1:]) for r in db.session.execute(
        stmt.group_by(ClientTraffic.client).order_by(total.desc(), ClientTraffic.client).limit(limit))]


MAX_TOP_CLIENTS = 1000


def client_limit(text):
    """How many top clients a query asks for (default 20, at most MAX_TOP_CLIENTS); TrafficError names a bad one."""
    if text is None or text == "":
        return 20
    if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_CLIENTS:
        raise TrafficError("limit %r must be a whole number from 1 to %d" % (text[:20], MAX_TOP_CLIENTS))
    return int(text)


TOP_CLIENT_COLUMNS = ("client",) + FIELDS + ("bytes_per_second",)


def top_clients_csv(rows, span):
    """The CSV export of top_clients() over a window of `span`: one row per client, its average rate."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TOP_CLIENT_COLUMNS)
    for row in rows:
        writer.writerow(list(row) + [round((row[1] + row[2]) / span.total_seconds(), 3)])
    return out.getvalue()


def parse_client(text):
    """The canonical address of a client filter ('10.88.0.02' is refused, 'fd00::0002' -> 'fd00::2')."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise TrafficError("client %r is no IP address; give a client's address such as 10.88.0.2 or fd00:88::2"
                           % text[:100]) from None


def totals(since, gateway=None):
    """(out_bytes, in_bytes, out_packets, in_packets) through the gateways, each byte once (per element)."""
    stmt = select(*_sums()).where(TrafficSample.minute >= since)
    if gateway:
        stmt = stmt.where(TrafficSample.gateway == gateway)
    return tuple(v or 0 for v in db.session.execute(stmt).one())


def _entry_sums():
    shared = [func.sum(case((EntryTraffic.shared.is_(True), getattr(EntryTraffic, f)), else_=0)).label("shared_" + f)
              for f in ("out_bytes", "in_bytes")]
    return [func.sum(getattr(EntryTraffic, f)).label(f) for f in FIELDS] + shared


class EntryUse:
    """One entry's traffic in a window: the bytes of its elements, and the part of them other entries share."""

    __slots__ = ("entry_id", "name", "entry", "out_bytes", "in_bytes", "out_packets", "in_packets",
                 "shared_out_bytes", "shared_in_bytes")

    def __init__(self, entry_id, name, entry, *values):
        self.entry_id, self.name, self.entry = entry_id, name, entry
        (self.out_bytes, self.in_bytes, self.out_packets, self.in_packets, self.shared_out_bytes,
         self.shared_in_bytes) = (int(v or 0) for v in values)

    @property
    def deleted(self):
        return self.entry is None

    @property
    def shared_bytes(self):
        return self.shared_out_bytes + self.shared_in_bytes

    def as_json(self):
        return {"entry_id": self.entry_id, "entry": self.name, "deleted": self.deleted,
                **{f: getattr(self, f) for f in FIELDS}, "shared_out_bytes": self.shared_out_bytes,
                "shared_in_bytes": self.shared_in_bytes}


def top_entries(since, gateway=None, limit=20):
    """[EntryUse] by total bytes, largest first; deleted and expired entries included (entry None)."""
    total = func.sum(EntryTraffic.out_bytes + EntryTraffic.in_bytes)
    stmt = select(EntryTraffic.entry_id, func.max(EntryTraffic.entry), *_entry_sums()).where(
        EntryTraffic.minute >= since)
    if gateway:
        stmt = stmt.where(EntryTraffic.gateway == gateway)
    rows = db.session.execute(stmt.group_by(EntryTraffic.entry_id).order_by(total.desc(), EntryTraffic.entry_id)
                              .limit(limit)).all()
    entries = {e.id: e for e in db.session.execute(
        select(Entry).where(Entry.id.in_([r[0] for r in rows]))).scalars()} if rows else {}
    return [EntryUse(r[0], r[1], entries.get(r[0]), *r[2:]) for r in rows]


def entry_use(entry_id, since, gateway=None):
    """One entry's EntryUse in the window (zeros and name None when it carried nothing)."""
    stmt = select(func.max(EntryTraffic.entry), *_entry_sums()).where(
        EntryTraffic.entry_id == entry_id, EntryTraffic.minute >= since)
    if gateway:
        stmt = stmt.where(EntryTraffic.gateway == gateway)
    row = db.session.execute(stmt).one()
    return EntryUse(entry_id, row[0], db.session.get(Entry, entry_id), *row[1:])


def entry_series(entry_id, since, gateway=None):
    """[(minute, out_bytes, in_bytes)] of one entry, oldest first, minutes without traffic left out."""
    stmt = (select(EntryTraffic.minute, func.sum(EntryTraffic.out_bytes), func.sum(EntryTraffic.in_bytes))
            .where(EntryTraffic.entry_id == entry_id, EntryTraffic.minute >= since))
    if gateway:
        stmt = stmt.where(EntryTraffic.gateway == gateway)
    return [tuple(r) for r in db.session.execute(stmt.group_by(EntryTraffic.minute).order_by(EntryTraffic.minute))]


def shared_with(entry_id):
    """{element: [names of the other entries producing it]} of an entry's elements that are shared now."""
    mine = select(EntryElement.element).where(EntryElement.entry_id == entry_id)
    result = {}
    for element, other in db.session.execute(
            select(EntryElement.element, Entry).join(Entry, Entry.id == EntryElement.entry_id)
            .where(EntryElement.element.in_(mine), EntryElement.entry_id != entry_id)
            .order_by(EntryElement.element, Entry.target, Entry.id)):
        result.setdefault(element, []).append(describe(other))
    return result


def gateways_with_traffic(since):
    return list(db.session.execute(select(TrafficSample.gateway).where(TrafficSample.minute >= since)
                                   .distinct().order_by(TrafficSample.gateway)).scalars())


def destination(text):
    """The canonical element text of a destination filter ('198.51.100.20' -> '198.51.100.20/32')."""
    try:
        return Element.parse(text).text
    except TargetError as exc:
        raise TrafficError("destination %r is no element (an address, a network, optionally with a port as in "
                           "'198.51.100.20/32 443/tcp'): %s" % (text[:100], exc)) from None


SERIES_COLUMNS = ("time",) + tuple(f + "_per_second" for f in FIELDS) + FIELDS


def known_entry(entry_id):
    """Whether entry_id is an entry now or carried traffic once (a deleted entry keeps its history)."""
    return db.session.get(Entry, entry_id) is not None or db.session.execute(
        select(EntryTraffic.id).where(EntryTraffic.entry_id == entry_id).limit(1)).first() is not None


def series_for(args, now=None):
    """(Series, filters) of a series query (window, gateway, and one of destination, entry or client), as the API
    and the UI's CSV take it; TrafficError names a bad value (404 for an entry that never existed)."""
    name = args.get("window", "1h")
    window(name)
    gateway = args.get("gateway") or None
    element = entry_id = address = None
    given = [k for k in ("destination", "entry", "client") if args.get(k)]
    if len(given) > 1:
        raise TrafficError("give one of destination, entry or client, not %s" % " and ".join(given))
    if args.get("client"):
        address = parse_client(args["client"])
    if args.get("destination"):
        element = destination(args["destination"])
    if args.get("entry"):
        try:
            entry_id = int(args["entry"])
        except ValueError:
            raise TrafficError("entry %r must be an entry id (a whole number)" % args["entry"][:100]) from None
        if not known_entry(entry_id):
            raise TrafficError("entry %d does not exist and never carried traffic" % entry_id, "not_found", 404)
    return (series(name, gateway, element, entry_id, now, address),
            {"window": name, "gateway": gateway, "destination": element, "entry": entry_id, "client": address})


def series_csv(result):
    """The CSV export of a Series: one row per bucket, UTC times, rates and counts."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SERIES_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows())
    return out.getvalue()


class Series:
    """A window's traffic as rates: `points` [(bucket start, out_bytes, in_bytes, out_packets, in_packets)]
    from the bucket holding the window's start to the one holding `end` (now), every bucket present."""

    def __init__(self, name, bucket, start, end, points):
        self.window, self.bucket, self.start, self.end, self.points = name, bucket, start, end, points

    def rates(self, point):
        """(out_bytes, in_bytes, out_packets, in_packets) per second of one point."""
        return tuple(v / self.bucket for v in point[1:])

    def rows(self):
        """The points as dicts of the CSV export and the API (time in UTC, ISO 8601 with Z)."""
        for point in self.points:
            rates = self.rates(point)
            yield dict({"time": point[0].isoformat() + "Z"},
                       **{f + "_per_second": round(r, 3) for f, r in zip(FIELDS, rates)},
                       **dict(zip(FIELDS, point[1:])))

    @property
    def peak_bytes_per_second(self):
        return max([max(p[1], p[2]) / self.bucket for p in self.points] + [0])


def series(name, gateway=None, element=None, entry_id=None, now=None, client_address=None):
    """The Series of window `name` for the whole fleet or one gateway, of everything, one destination element,
    one entry (then the bytes of its elements, shared ones included, as on its page) or one client address."""
    window(name)
    end = now or utcnow()
    bucket = BUCKETS[name]
    epoch = dt.datetime(1970, 1, 1)
    first = int((end - WINDOWS[name] - epoch).total_seconds()) // bucket * bucket
    start = epoch + dt.timedelta(seconds=first)
    n = int((end - start).total_seconds()) // bucket + 1
    model = EntryTraffic if entry_id is not None else ClientTraffic if client_address is not None else TrafficSample
    stmt = select(model.minute, *[func.sum(getattr(model, f)) for f in FIELDS]).where(
        model.minute >= start, model.minute <= end)
    if gateway:
        stmt = stmt.where(model.gateway == gateway)
    if entry_id is not None:
        stmt = stmt.where(EntryTraffic.entry_id == entry_id)
    if element is not None:
        stmt = stmt.where(TrafficSample.element == element)
    if client_address is not None:
        stmt = stmt.where(ClientTraffic.client == client_address)
    points = [[start + dt.timedelta(seconds=k * bucket), 0, 0, 0, 0] for k in range(n)]
    for minute, *values in db.session.execute(stmt.group_by(model.minute)):
        k = int((minute - start).total_seconds()) // bucket
        if 0 <= k < n:
            for i, v in enumerate(values):
                points[k][i + 1] += int(v or 0)
    return Series(name, bucket, start, end, [tuple(p) for p in points])
