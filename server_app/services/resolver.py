"""The resolver of domain entries: accumulate addresses with a grace period, never remove on DNS failure.

One pass (`Resolver.run_once`) takes the domain entries that are due, resolves them concurrently with
dnspython against the configured DNS servers, and applies each answer in its own transaction through the
change log, so the gateways get the new addresses at once. The loop (`Resolver.loop`) runs a pass every
second in the replica that holds the database lease "resolver"; the others wait and take over when the
holder stops renewing. docs/resolver.md describes the rules.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import ipaddress
import logging
import os
import socket
import threading
import time
import uuid

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Entry, EntryAddress, Lease, utcnow
from . import audit, entries, hub

log = logging.getLogger(__name__)

LEASE = "resolver"
LEASE_SECONDS = 15


class Answer:
    """The outcome of resolving one name: status ok, nxdomain or error."""

    __slots__ = ("status", "addresses", "ttl", "error")

    def __init__(self, status, addresses=(), ttl=None, error=""):
        self.status = status
        self.addresses = sorted(set(addresses), key=lambda a: (a.version, a))
        self.ttl = ttl
        self.error = error

    def __repr__(self):
        return "Answer(%s, %s, ttl=%s, %s)" % (self.status, [str(a) for a in self.addresses], self.ttl, self.error)


def make_dns(config):
    """A dnspython Resolver for the configured servers (or the system's), with timeout and retries."""
    servers = config["dns_servers"]
    res = dns.resolver.Resolver(configure=not servers)
    if servers:
        res.nameservers = []
        for server in servers:
            host, _colon, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
            res.nameservers.append(host)
            if port:
                res.port = int(port)
    res.timeout = config["dns_timeout"]
    res.lifetime = config["dns_timeout"] * config["dns_tries"]
    res.cache = None
    return res


def resolve(res, name, aaaa=True):
    """Resolve A (and AAAA) following CNAME chains; never raises."""
    addresses, ttls, statuses = [], [], []
    for rdtype in (("A", "AAAA") if aaaa else ("A",)):
        try:
            answer = res.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            ttl = None
            for response in (exc.kwargs.get("responses") or {}).values():
                for rrset in response.authority:
                    ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
            statuses.append(("nxdomain", ttl))
            continue
        except dns.resolver.NoNameservers as exc:
            return Answer("error", error="no DNS server answered %s %s: %s" % (name, rdtype, _short(exc)))
        except dns.exception.Timeout:
            return Answer("error", error="DNS timeout resolving %s %s" % (name, rdtype))
        except (dns.exception.DNSException, OSError) as exc:
            return Answer("error", error="DNS error resolving %s %s: %s" % (name, rdtype, _short(exc)))
        statuses.append(("ok", None))
        if answer.rrset is not None:
            ttls.append(min([answer.rrset.ttl] + [r.ttl for r in answer.response.answer]))
            for rdata in answer.rrset:
                addresses.append(ipaddress.ip_address(rdata.address))
        else:
            # NODATA: the SOA minimum in the authority section says how long that holds.
            for rrset in answer.response.authority:
                ttls.append(rrset.ttl)
    if statuses and all(s == "nxdomain" for s, _ttl in statuses):
        ttl = min([t for _status, t in statuses if t is not None], default=None)
        return Answer("nxdomain", ttl=ttl, error="%s does not exist (NXDOMAIN)" % name)
    return Answer("ok", addresses, min(ttls) if ttls else None)


def _short(exc):
    return str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__


class Resolver:
    """The resolver of one server process."""

    def __init__(self, app, resolve_fn=None):
        self.app = app
        self.cfg = app.config["OG"]
        self.holder = "%s:%d:%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])
        self.resolve_fn = resolve_fn
        self.stats = app.extensions.setdefault("og_resolver_stats", {
            "runs": 0, "errors": 0, "names": 0, "added": 0, "removed": 0, "last_success": None,
            "last_duration": 0.0, "leader": False, "last_error": ""})
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None
        self._dns = None
        self._lock = threading.Lock()
        self._pool = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self):
        with self._lock:
            if self._thread is None and self.cfg["resolver_enabled"]:
                self._thread = threading.Thread(target=self.loop, name="og-resolver", daemon=True)
                self._thread.start()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._thread is not None:
                try:
                    with self.app.app_context():
                        self.release()
                except Exception:  # noqa: BLE001 - the database may be gone; the lease then just expires
                    pass

    def _resolver(self):
        if self._dns is None:
            self._dns = make_dns(self.cfg)
        return self._dns

    def lookup(self, name):
        if self.resolve_fn is not None:
            return self.resolve_fn(name)
        return resolve(self._resolver(), name, self.cfg["resolve_aaaa"])

    # ---- the lease -------------------------------------------------------------------------------
    def take_lease(self, now=None):
        """Hold or take the resolver lease; True if this process is the resolver now."""
        now = now or utcnow()
        until = now + dt.timedelta(seconds=LEASE_SECONDS)
        result = db.session.execute(
            update(Lease).where(Lease.name == LEASE, (Lease.holder == self.holder) | (Lease.until < now))
            .values(holder=self.holder, until=until))
        if result.rowcount == 0:
            if db.session.get(Lease, LEASE) is None:
                db.session.add(Lease(name=LEASE, holder=self.holder, until=until))
                try:
                    db.session.commit()
                except IntegrityError:
                    db.session.rollback()
                    return False
                return True
            db.session.commit()
            return False
        db.session.commit()
        return True

    def release(self):
        db.session.execute(update(Lease).where(Lease.name == LEASE, Lease.holder == self.holder)
                           .values(until=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()

    # ---- the loop --------------------------------------------------------------------------------
    def loop(self):
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    try:
                        leader = self.take_lease()
                        if leader != self.stats["leader"]:
                            log.info("resolver %s: %s", self.holder, "took the lease" if leader else "standing by")
                        self.stats["leader"] = leader
                        if leader:
                            self.run_once()
                    finally:
                        db.session.remove()
                backoff = 1.0
                wait = 1.0
            except Exception as exc:  # the loop never dies: database or DNS outages are retried with backoff
                self.stats["errors"] += 1
                self.stats["last_error"] = _short(exc)
                log.warning("resolver pass failed (%s); retrying in %.0fs", _short(exc), backoff)
                wait, backoff = backoff, min(backoff * 2, 10.0)
            self._wake.wait(wait)
            self._wake.clear()

    def due(self, now, limit=20000):
        # Wildcard entries ('*.example.com') are never due: nobody can list a zone's names, so they are learned
        # through the gateways' DNS forwarder only (their next_resolve_at stays NULL; the filter is the guard
        # for a row made due by other means: an older server, a restore).
        return list(db.session.execute(
            select(Entry.id, Entry.target).where(Entry.kind == "domain", Entry.next_resolve_at <= now,
                                                 Entry.target.not_like("*.%"))
            .order_by(Entry.next_resolve_at).limit(limit)).all())

    def run_once(self, now=None):
        """Resolve every due domain and apply the answers; return the number of names resolved."""
        started = time.monotonic()
        now = now or utcnow()
        due = self.due(now)
        db.session.commit()
        if not due:
            return 0
        answers = self.resolve_many([name for _entry_id, name in due])
        pending = self.apply_unchanged(list(zip(due, answers)), now)
        changed = 0
        for (entry_id, name), answer in pending:
            try:
                if self.apply(entry_id, answer):
                    changed += 1
            except IntegrityError:
                db.session.rollback()   # raced with another writer; the next pass repeats it
        self.stats["runs"] += 1
        self.stats["names"] += len(due)
        self.stats["last_success"] = time.time()
        self.stats["last_duration"] = time.monotonic() - started
        log.info("resolver pass: %d names, %d changed, %.2fs", len(due), changed, self.stats["last_duration"])
        if changed:
            hub.wake()
        return len(due)

    def delay_for(self, answer):
        cfg = self.cfg
        if answer.ttl is None:
            return cfg["resolve_interval"]
        return max(cfg["resolve_min_interval"], min(cfg["resolve_interval"], answer.ttl))

    def apply_unchanged(self, results, now):
        """Record, in a few bulk statements, every answer that changes nothing; return the other results.

        In the steady state almost every name answers what it answered before: those need only their
        timestamps moved, not a transaction each."""
        ids = [entry_id for (entry_id, _name), answer in results if answer.status == "ok"]
        if not ids:
            return results
        current, flagged = {}, set()
        for i in range(0, len(ids), 5000):
            part = ids[i:i + 5000]
            # Learned rows are not the resolver's: an answer that also holds one is a change (apply makes it
            # resolved), and one the answer lacks is left to its own expiry.
            for entry_id, address, grace_until, refused in db.session.execute(
                    select(EntryAddress.entry_id, EntryAddress.address, EntryAddress.grace_until,
                           EntryAddress.refused).where(EntryAddress.entry_id.in_(part),
                                                       EntryAddress.source != "learned")):
                current.setdefault(entry_id, set()).add(address)
                if grace_until is not None or refused:
                    flagged.add(entry_id)
            for entry_id, error, capped in db.session.execute(
                    select(Entry.id, Entry.resolve_error, Entry.capped).where(Entry.id.in_(part))):
                if error or capped:
                    flagged.add(entry_id)
        same, rest = {}, []
        for (entry_id, name), answer in results:
            if (answer.status == "ok" and answer.addresses and entry_id not in flagged
                    and {str(ipaddress.ip_network(a)) for a in answer.addresses} == current.get(entry_id)):
                same.setdefault(self.delay_for(answer), []).append(entry_id)
            else:
                rest.append(((entry_id, name), answer))
        for delay, group in same.items():
            for i in range(0, len(group), 5000):
                part = group[i:i + 5000]
                db.session.execute(update(Entry).where(Entry.id.in_(part)).values(
                    resolved_at=now, next_resolve_at=now + dt.timedelta(seconds=delay)),
                    execution_options={"synchronize_session": False})
                db.session.execute(update(EntryAddress).where(EntryAddress.entry_id.in_(part),
                                                              EntryAddress.source != "learned").values(
                    last_seen=now), execution_options={"synchronize_session": False})
        db.session.commit()
        return rest

    def resolve_many(self, names):
        if len(names) == 1:
            return [self.lookup(names[0])]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.cfg["resolve_concurrency"],
                                                               thread_name_prefix="og-dns")
        return list(self._pool.map(self.lookup, names))

    def resolve_entry_now(self, entry_id, name):
        """Resolve a new domain at once (from the API request), so the answer already shows its addresses."""
        if name.startswith("*."):
            return None   # a wildcard is learned through the gateways' DNS forwarder only
        answer = self.lookup(name)
        changed = self.apply(entry_id, answer)
        if changed:
            hub.wake()
        return answer

    # ---- applying one answer ---------------------------------------------------------------------
    def apply(self, entry_id, answer, now=None):
        """Apply one answer to one entry in one transaction; return True if its published elements changed."""
        now = now or utcnow()
        cfg = self.cfg
        entry = db.session.get(Entry, entry_id)
        if entry is None or entry.kind != "domain" or entry.wildcard:
            db.session.rollback()
            return False
        grace = dt.timedelta(seconds=entry.grace_seconds if entry.grace_seconds is not None else cfg["resolve_grace"])
        delay = self.delay_for(answer)
        before = entries.elements_of(entry)
        added, removed, refused = [], [], []

        if answer.status == "error":
            # A DNS failure never removes anything; it is recorded and retried at the next interval.
            self.stats["errors"] += 1
            entry.resolve_error = answer.error
            entry.next_resolve_at = now + dt.timedelta(seconds=min(delay, cfg["resolve_interval"]))
            db.session.commit()
            return False

        policy = entries.policy_from(cfg)
        current = {a.address: a for a in entry.addresses}
        returned = set()
        capped = False
        for ip in answer.addresses:
            key = str(ipaddress.ip_network(ip))
            returned.add(key)
            refusal = policy.refusal(ipaddress.ip_network(ip))
            row = current.get(key)
            # The same text as an entry typed with this address gets (og_netpolicy), plus what happens to it.
            reason = ("%s %s; never published" % (ip, refusal)) if refusal else ""
            if row is None:
                active = sum(1 for a in entry.addresses if not a.refused)
                if not reason and active >= cfg["resolve_cap"]:
                    capped = True
                    continue
                row = EntryAddress(address=key, source="resolved", first_seen=now, last_seen=now, refused=reason)
                entry.addresses.append(row)
                current[key] = row
                (refused if reason else added).append(key)
            else:
                row.last_seen = now
                row.grace_until = None
                row.refused = reason
                if row.source == "learned":
                    # DNS answers it here too: resolved while the resolver returns it; its learned expiry and
                    # gateway are kept for when the resolver stops returning it (a CDN's pool rotating on).
                    row.source = "resolved"
        for key, row in list(current.items()):
            if key in returned or row.source != "resolved":
                continue
            if row.refused:
                entry.addresses.remove(row)
                continue
            if row.expires_at is not None and row.expires_at > now:
                # The gateways' DNS forwarders still hand it out (learned.apply moves expires_at on): it is
                # learned again and ends at its learned expiry, not the resolver's grace, so that a gateway
                # that did not answer the client keeps it (failover) for as long as the answering one does.
                row.source, row.grace_until = "learned", None
                continue
            if row.grace_until is None:
                row.grace_until = now + grace
            if row.grace_until <= now:
                entry.addresses.remove(row)
                removed.append(key)
        entry.capped = capped
        # Wake up in time for the next grace deadline.
        deadlines = [a.grace_until for a in entry.addresses if a.grace_until is not None]
        next_at = now + dt.timedelta(seconds=delay)
        if deadlines:
            next_at = min(next_at, max(min(deadlines), now + dt.timedelta(seconds=1)))
        entry.next_resolve_at = next_at
        entry.resolved_at = now
        entry.resolve_error = answer.error if answer.status == "nxdomain" else ""
        db.session.flush()
        # Everything the resolver removes has aged out: gateways keep the live connections.
        revision = entries.sync_elements({entry: entries.elements_of(entry)}, aged=True)
        after = entries.elements_of(entry)
        if revision is not None or refused:
            parts = []
            if added:
                parts.append("added " + ", ".join(added))
            if removed:
                parts.append("removed " + ", ".join(removed) + " (grace ended)")
            if refused:
                parts.append("refused " + ", ".join(refused) + " (internal)")
            audit.record("entry.resolve", "entry", entry.id, "%s: %s" % (entry.target, "; ".join(parts)),
                         before={"elements": sorted(before)}, after={"elements": sorted(after)}, revision=revision,
                         who=("resolver", "system", ""))
        db.session.commit()
        self.stats["added"] += len(added)
        self.stats["removed"] += len(removed)
        return revision is not None
