"""Addresses learned through the gateways' DNS forwarders (og-dns), stored and published to every gateway.

A gateway's agent sends each og-dns spool file as one `learned` frame (docs/protocol.md); `apply` stores it in
one transaction: an item is taken only if its entry exists, is a domain entry and the item's name matches it
(og_netpolicy.matches, wildcards included), and its address passes the same internal-network and overlap rules
(AddressPolicy.refusal) the resolver applies. A taken address becomes an EntryAddress of source "learned" with
`learned_via` the gateway's name and `expires_at` the end of the learned answer; an address the entry already
holds from the resolver keeps its source while the resolver returns it (last_seen moves, and the learned gateway
and expiry are noted, for resolver.apply to make it learned again once the resolver stops returning it). The elements
this adds go out through the change log like a resolved answer's, in one revision per frame. `expire` (the
housekeeper) removes learned rows whose expiry has passed, as aged-out elements. The frame's unlisted names
are counted in the same transaction (services/unlisted.py), and its answers (which names og-dns answered with
which addresses) stored there too (services/answers.py). docs/dns.md, "Fleet-wide learning", has the rules.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from og_kernel.og_netpolicy import matches

from ..extensions import db
from ..models import Entry, EntryAddress, utcnow
from . import answers, audit, entries, hub, unlisted

log = logging.getLogger(__name__)

SOURCE = "learned"


def _when(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def apply(gateway, frame, config, now=None):
    """Store one learned frame of `gateway` in one transaction; return a summary dict (stored, refused,
    skipped, revision).

    Two writers adding the same new address at once (two gateways learning a popular name, or the resolver)
    collide on the unique constraints: the loser rolls back and applies the frame again, which then finds the
    winner's row. IntegrityError only if that happens twice in a row."""
    try:
        return _apply(gateway, frame, config, now or utcnow())
    except IntegrityError:
        db.session.rollback()
        return _apply(gateway, frame, config, now or utcnow())


def _apply(gateway, frame, config, now):
    policy = entries.policy_from(config)
    cap = config["resolve_cap"]
    held = {}   # entry id -> (entry or None, {address: row}, [active rows]), read once per entry of the frame

    def entry_of(entry_id):
        if entry_id not in held:
            entry = db.session.get(Entry, entry_id)
            if entry is None or entry.kind != "domain":
                held[entry_id] = None
            else:
                held[entry_id] = (entry, {a.address: a for a in entry.addresses},
                                  [sum(1 for a in entry.addresses if not a.refused)])
        return held[entry_id]

    touched = {}
    stored, refused, skipped = [], [], []
    for item in frame.learned:
        found = entry_of(item.entry)
        if found is None or not matches(found[0].target, item.name):
            skipped.append("%s %s" % (item.name, item.address))
            continue
        entry, rows, active = found
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
        row = rows.get(key)
        if row is None:
            if active[0] >= cap:
                skipped.append("%s %s (entry capped at %d)" % (item.name, item.address, cap))
                continue
            row = rows[key] = EntryAddress(address=key, source=SOURCE, first_seen=now, last_seen=now,
                                           learned_via=gateway, expires_at=expires)
            entry.addresses.append(row)
            active[0] += 1
            stored.append("%s %s" % (item.name, key))
        elif row.refused:
            continue   # recorded refused by the resolver: it stays unpublished
        else:
            row.last_seen = now
            if row.source in (SOURCE, "resolved"):
                # A resolved row keeps the learned expiry too, for when the resolver stops returning it
                # (resolver.apply makes it learned again then, instead of starting the grace).
                row.expires_at = max(row.expires_at or expires, expires)
                row.learned_via = gateway
        touched[entry.id] = entry
    for cap_hit in frame.caps:
        # og-dns's cap of addresses per name is the entry's; its gateway cap (the learn sets full) is the
        # gateway's, shown by og-dns's metrics and alert (og_dns_caps_hit_total{kind="gateway"}).
        found = entry_of(cap_hit.entry) if cap_hit.kind == "name" else None
        if found is not None:
            found[0].capped = True
            touched[found[0].id] = found[0]
    revision = entries.sync_elements({e: entries.elements_of(e) for e in touched.values()}) if touched else None
    queries = unlisted.record(gateway, frame.batch, frame.unlisted, now)   # same transaction, once per batch
    told = answers.record(gateway, frame.answers, now)                     # an upsert: a batch again adds nothing
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
    log.info("gateway %s learned batch %s: %d stored, revision %s, refused %s, skipped %s, %d unlisted queries, "
             "%d answers", gateway, frame.batch, len(stored), revision, refused[:5], skipped[:5], queries, told)
    return {"stored": len(stored), "refused": len(refused), "skipped": len(skipped), "revision": revision,
            "unlisted": queries, "answers": told}


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
    cap = current_app.config["OG"]["resolve_cap"]
    for entry in touched.values():
        if entry.wildcard and entry.capped and sum(1 for a in entry.addresses if not a.refused) < cap:
            entry.capped = False   # no resolver pass recomputes a wildcard's flag: its expiry does
    revision = entries.sync_elements({e: entries.elements_of(e) for e in touched.values()}, aged=True)
    if revision is not None:
        audit.record("entry.learn_expired", "entry", ",".join(str(i) for i in sorted(touched))[:60],
                     "learned addresses expired: %s" % ", ".join(sorted(r.address for r in rows)[:20]),
                     revision=revision, who=("housekeeper", "system", ""))
    db.session.commit()
    if revision is not None:
        hub.wake(revision)
    return revision
