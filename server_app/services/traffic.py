"""Traffic history for the UI: the agents' counters frames turned into per-minute samples.

Agents send, every 15 s, the bytes and packets each element carried since their previous frame
(`"increments": true`, docs/protocol.md). Older agents send totals since they started; those are turned into
increments against the previous frame of the same agent run (the first frame of a run seen by this process
only sets the baseline). Increments are summed in memory per (gateway, element, minute) and written in one
transaction every few seconds by the hub; samples older than `traffic_retention_days` are pruned.

An address shared by two entries counts for both entries' traffic; the fleet-wide and per-destination tops
count it once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import and_, func, select

from ..models import Entry, EntryElement, TrafficSample, db, utcnow

log = logging.getLogger(__name__)
FIELDS = ("out_bytes", "in_bytes", "out_packets", "in_packets")
WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1)}
MAX_ELEMENT = 96
# Unwritten (gateway, element, minute) rows kept while the database is down; beyond this, new ones are dropped
# (and counted) rather than letting memory grow without end.
MAX_PENDING = 500000


class TrafficError(ValueError):
    pass


class Traffic:
    """One per process: accumulates increments and writes them in batches."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = {}        # (gateway, element, minute) -> [out_bytes, in_bytes, out_packets, in_packets]
        self.baselines = {}      # gateway -> (boot, {element: [totals]}) for agents that send totals
        self.dropped = 0

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
                        self.dropped += 1
                        continue
                    acc = self.pending.setdefault(key, [0, 0, 0, 0])
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
        """Write what was accumulated in one transaction; on failure keep it for the next try."""
        with self.lock:
            pending, self.pending = self.pending, {}
        if not pending:
            return 0
        try:
            groups = {}
            for (gateway, element, minute), row in pending.items():
                groups.setdefault((gateway, minute), {})[element] = row
            for (gateway, minute), rows in groups.items():
                names = list(rows)
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    existing = {s.element: s for s in db.session.execute(select(TrafficSample).where(
                        TrafficSample.gateway == gateway, TrafficSample.minute == minute,
                        TrafficSample.element.in_(chunk))).scalars()}
                    for element in chunk:
                        row = rows[element]
                        sample = existing.get(element)
                        if sample is None:
                            db.session.add(TrafficSample(gateway=gateway, element=element, minute=minute,
                                                         **dict(zip(FIELDS, row))))
                        else:
                            for f, v in zip(FIELDS, row):
                                setattr(sample, f, getattr(sample, f) + v)
            db.session.commit()
        except Exception:
            db.session.rollback()
            with self.lock:
                for key, row in pending.items():
                    acc = self.pending.setdefault(key, [0, 0, 0, 0])
                    for i, v in enumerate(row):
                        acc[i] += v
            raise
        return len(pending)

    @staticmethod
    def prune(days, now=None):
        cutoff = (now or utcnow()) - dt.timedelta(days=days)
        deleted = db.session.query(TrafficSample).filter(TrafficSample.minute < cutoff).delete(
            synchronize_session=False)
        db.session.commit()
        return deleted


def window(name):
    if name not in WINDOWS:
        raise TrafficError("window %r must be one of %s" % (name, ", ".join(WINDOWS)))
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


def top_entries(since, gateway=None, limit=20):
    """[(Entry, out_bytes, in_bytes, out_packets, in_packets)] by total bytes, largest first."""
    total = func.sum(TrafficSample.out_bytes + TrafficSample.in_bytes)
    stmt = (select(EntryElement.entry_id, *_sums())
            .join(TrafficSample, TrafficSample.element == EntryElement.element)
            .where(TrafficSample.minute >= since))
    if gateway:
        stmt = stmt.where(TrafficSample.gateway == gateway)
    rows = db.session.execute(stmt.group_by(EntryElement.entry_id).order_by(total.desc()).limit(limit)).all()
    entries = {e.id: e for e in db.session.execute(
        select(Entry).where(Entry.id.in_([r[0] for r in rows]))).scalars()} if rows else {}
    return [(entries[r[0]],) + tuple(r[1:]) for r in rows if r[0] in entries]


def entry_series(entry_id, since, gateway=None):
    """[(minute, out_bytes, in_bytes)] of one entry's elements, oldest first, minutes without traffic left out."""
    stmt = (select(TrafficSample.minute, func.sum(TrafficSample.out_bytes), func.sum(TrafficSample.in_bytes))
            .join(EntryElement, and_(EntryElement.element == TrafficSample.element,
                                     EntryElement.entry_id == entry_id))
            .where(TrafficSample.minute >= since))
    if gateway:
        stmt = stmt.where(TrafficSample.gateway == gateway)
    return [tuple(r) for r in db.session.execute(stmt.group_by(TrafficSample.minute).order_by(TrafficSample.minute))]


def gateways_with_traffic(since):
    return list(db.session.execute(select(TrafficSample.gateway).where(TrafficSample.minute >= since)
                                   .distinct().order_by(TrafficSample.gateway)).scalars())
