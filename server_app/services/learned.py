"""Addresses learned through the gateways' DNS forwarders (og-dns), stored and published to every gateway.

A gateway's agent sends each og-dns spool file as one `learned` frame (docs/protocol.md); `apply` stores it in
one transaction: an item is taken only if its entry exists, is a domain entry and the item's name matches it
(og_netpolicy.matches, wildcards included), and its address passes the same internal-network and overlap rules
(AddressPolicy.refusal) the resolver applies. A taken address becomes an EntryAddress of source "learned" with
`learned_via` the gateway's name and `expires_at` the end of the learned answer; an address the entry already
holds from the resolver or a typed target keeps its source (only last_seen and expires_at move). The elements
this adds go out through the change log like a resolved answer's, in one revision per frame. `expire` (the
housekeeper) removes learned rows whose expiry has passed, as aged-out elements. docs/dns.md, "Fleet-wide
learning", has the rules.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging

from sqlalchemy import select

from og_kernel.og_netpolicy import matches

from ..extensions import db
from ..models import Entry, EntryAddress, EntryElement, utcnow
from . import audit, changelog, entries, hub

log = logging.getLogger(__name__)

SOURCE = "learned"


def _when(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def _publish(touched_entries, aged):
    """Bring entry_elements of `touched_entries` in line with their addresses and log the union's change in one
    revision (None: the published set did not change). Caller commits."""
    db.session.flush()
    wanted = {entry.id: entries.elements_of(entry) for entry in touched_entries}
    have = {entry.id: set() for entry in touched_entries}
    for entry_id, element in db.session.execute(
            select(EntryElement.entry_id, EntryElement.element).where(EntryElement.entry_id.in_(list(have)))):
        have[entry_id].add(element)
    touched = set()
    for entry_id in have:
        touched |= wanted[entry_id] ^ have[entry_id]
    if not touched:
        return None
    before = set(db.session.execute(select(EntryElement.element).where(EntryElement.element.in_(touched)))
                 .scalars())
    for entry_id in have:
        for element in wanted[entry_id] - have[entry_id]:
            db.session.add(EntryElement(entry_id=entry_id, element=element))
        gone = have[entry_id] - wanted[entry_id]
        if gone:
            db.session.execute(EntryElement.__table__.delete().where(
                EntryElement.entry_id == entry_id, EntryElement.element.in_(gone)))
    db.session.flush()
    after = set(db.session.execute(select(EntryElement.element).where(EntryElement.element.in_(touched)))
                .scalars())
    return changelog.record(after - before, before - after, aged=aged, renamed=before & after)


def apply(gateway, frame, config, now=None):
    """Store one learned frame of `gateway` in one transaction; return a summary dict (stored, refused,
    skipped, revision)."""
    now = now or utcnow()
    policy = entries.policy_from(config)
    cap = config["resolve_cap"]
    touched = {}
    stored, refused, skipped = [], [], []
    for item in frame.learned:
        entry = touched.get(item.entry) or db.session.get(Entry, item.entry)
        if entry is None or entry.kind != "domain" or not matches(entry.target, item.name):
            skipped.append("%s %s" % (item.name, item.address))
            continue
        expires = _when(item.expires)
        if expires <= now:
            skipped.append("%s %s (expired)" % (item.name, item.address))
            continue
        try:
            network = ipaddress.ip_network(item.address)
        except ValueError:
            skipped.append("%s %s (not an address)" % (item.name, item.address))
            continue
        reason = policy.refusal(network)
        if reason:
            refused.append("%s %s (%s)" % (item.name, item.address, reason))
            continue
        key = str(network)
        row = next((a for a in entry.addresses if a.address == key), None)
        if row is None:
            if sum(1 for a in entry.addresses if not a.refused) >= cap:
                entry.capped = True
                touched[entry.id] = entry
                skipped.append("%s %s (entry capped at %d)" % (item.name, item.address, cap))
                continue
            row = EntryAddress(address=key, source=SOURCE, first_seen=now, last_seen=now, learned_via=gateway,
                               expires_at=expires)
            entry.addresses.append(row)
            stored.append("%s %s" % (item.name, key))
        else:
            if row.refused:
                continue   # recorded refused by the resolver: it stays unpublished
            row.last_seen = now
            row.expires_at = expires if row.expires_at is None else max(row.expires_at, expires)
            if row.source == SOURCE:
                row.learned_via = gateway
        touched[entry.id] = entry
    for cap_hit in frame.caps:
        entry = touched.get(cap_hit.entry) or db.session.get(Entry, cap_hit.entry)
        if entry is not None and entry.kind == "domain":
            entry.capped = True
            touched[entry.id] = entry
    revision = _publish(list(touched.values()), aged=False) if touched else None
    if revision is not None or refused:
        parts = []
        if stored:
            more = " and %d more" % (len(stored) - 20) if len(stored) > 20 else ""
            parts.append("learned " + ", ".join(stored[:20]) + more)
        if refused:
            parts.append("refused " + ", ".join(refused[:20]))
        audit.record("entry.learn", "gateway", gateway, "through %s's DNS: %s" % (gateway, "; ".join(parts)),
                     revision=revision, who=(gateway, "gateway", ""))
    db.session.commit()
    if revision is not None:
        hub.wake(revision)
    if refused or skipped:
        log.info("gateway %s learned batch %s: %d stored, refused %s, skipped %s", gateway, frame.batch,
                 len(stored), refused[:5], skipped[:5])
    return {"stored": len(stored), "refused": len(refused), "skipped": len(skipped), "revision": revision}


def expire(now=None):
    """Remove every learned address whose expiry has passed, in one revision (aged out: gateways keep live
    connections); return the revision or None."""
    now = now or utcnow()
    rows = db.session.execute(select(EntryAddress).where(EntryAddress.source == SOURCE,
                                                         EntryAddress.expires_at <= now)).scalars().all()
    if not rows:
        db.session.commit()
        return None
    touched = {}
    for row in rows:
        touched[row.entry_id] = row.entry
        row.entry.addresses.remove(row)
    revision = _publish(list(touched.values()), aged=True)
    if revision is not None:
        audit.record("entry.learn_expired", "entry", ",".join(str(i) for i in sorted(touched))[:60],
                     "learned addresses expired: %s" % ", ".join(sorted(r.address for r in rows)[:20]),
                     revision=revision, who=("housekeeper", "system", ""))
    db.session.commit()
    if revision is not None:
        hub.wake(revision)
    return revision
