"""Allowlist entries: validation, creation, editing and deletion, each committed with its change-log revision.

Every change that commits a revision wakes the hub (hub.wake), so this replica's gateways get it at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging

from sqlalchemy import func, insert, or_, select, update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from og_kernel.og_elements import Element
from og_kernel.og_netpolicy import (
    AddressPolicy, TargetError, format_port_spec, normalise_domain, parse_port_spec)

from ..errors import RequestError
from ..extensions import db, resolver as current_resolver
from ..models import Entry, EntryAddress, EntryElement, utcnow
from . import audit, changelog, hub

log = logging.getLogger(__name__)


class EntryError(RequestError):
    """A refused entry operation: status, code and a message naming the value and the fix."""


_policies = {}


def policy_from(config):
    """The AddressPolicy of a configuration (built once per distinct setting)."""
    key = (tuple(config["internal_networks"]), config["min_prefix_v4"], config["min_prefix_v6"])
    policy = _policies.get(key)
    if policy is None:
        policy = _policies[key] = AddressPolicy(config["internal_networks"], config["min_prefix_v4"],
                                                config["min_prefix_v6"])
    return policy


def _parse_ports(ports):
    if ports is None:
        return []
    if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
        raise EntryError(400, "invalid_ports", "ports must be a list of strings such as [\"443/tcp\", \"8000-8100/tcp\"]")
    try:
        return sorted({format_port_spec(*parse_port_spec(p)) for p in ports})
    except TargetError as exc:
        raise EntryError(400, "invalid_ports", str(exc))


def _parse_expiry(value):
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise EntryError(400, "invalid_expires_at", "expires_at must be an ISO 8601 time such as 2026-12-31T18:00:00Z")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EntryError(400, "invalid_expires_at",
                         "expires_at %r is not an ISO 8601 time such as 2026-12-31T18:00:00Z" % value)
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if when <= utcnow():
        raise EntryError(400, "invalid_expires_at", "expires_at %s lies in the past" % value)
    return when


def elements_of(entry):
    """The elements an entry produces from its current addresses."""
    result = set()
    for address in entry.addresses:
        if address.refused:
            continue
        for port in (entry.ports or [None]):
            result.add(Element(address.address, port).text)
    return result


def sync_elements(wanted, aged=False):
    """Make entry_elements of each entry of `wanted` ({entry: its element texts}) equal its set; log the change
    of the union in one revision (None: the published set did not change). Caller commits."""
    db.session.flush()
    wanted = {entry.id: elements for entry, elements in wanted.items()}
    have = {entry_id: set() for entry_id in wanted}
    for entry_id, element in db.session.execute(
            select(EntryElement.entry_id, EntryElement.element).where(EntryElement.entry_id.in_(list(wanted)))):
        have[entry_id].add(element)
    touched = set().union(*(wanted[i] ^ have[i] for i in wanted))
    elsewhere = set()
    if touched:
        elsewhere = set(db.session.execute(
            select(EntryElement.element).where(EntryElement.element.in_(touched),
                                               EntryElement.entry_id.not_in(list(wanted)))).scalars())
    before = elsewhere.union(*(have[i] & touched for i in wanted))
    after = elsewhere.union(*(wanted[i] & touched for i in wanted))
    for entry_id in wanted:
        for element in wanted[entry_id] - have[entry_id]:
            db.session.add(EntryElement(entry_id=entry_id, element=element))
        gone = have[entry_id] - wanted[entry_id]
        if gone:
            db.session.execute(EntryElement.__table__.delete().where(
                EntryElement.entry_id == entry_id, EntryElement.element.in_(gone)))
    return changelog.record(after - before, before - after, aged=aged, renamed=before & after)


FIELDS = ("target", "ports", "deletable", "expires_at", "comment", "grace_seconds")


def validate(data, config):
    """Check one entry's fields; return a dict of normalised values or raise EntryError naming the problem."""
    if not isinstance(data, dict):
        raise EntryError(400, "invalid_body", "the body must be a JSON object such as {\"target\": \"198.51.100.10\"}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise EntryError(400, "unknown_field", "unknown field(s) %s; known fields are %s"
                         % (", ".join(unknown), ", ".join(FIELDS)))
    if "target" not in data or data["target"] in (None, ""):
        raise EntryError(400, "missing_target",
                         "target is required: an IP address, a CIDR, a domain name or a wildcard such as *.example.com")
    if not isinstance(data["target"], str):
        raise EntryError(400, "invalid_target", "target must be a string such as \"198.51.100.10\"")
    try:
        target = policy_from(config).parse_target(data["target"])
    except TargetError as exc:
        raise EntryError(400, "invalid_target", str(exc))
    ports = _parse_ports(data.get("ports"))
    deletable = data.get("deletable", True)
    if not isinstance(deletable, bool):
        raise EntryError(400, "invalid_deletable", "deletable must be true or false, not %r" % (deletable,))
    comment = data.get("comment", "") or ""
    if not isinstance(comment, str) or len(comment) > 2000:
        raise EntryError(400, "invalid_comment", "comment must be a string of at most 2000 characters")
    grace = data.get("grace_seconds")
    if grace is not None:
        if target.kind != "domain":
            raise EntryError(400, "invalid_grace_seconds", "grace_seconds applies to domain entries only; "
                             "%s is an address" % target.value)
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 7 * 86400:
            raise EntryError(400, "invalid_grace_seconds",
                             "grace_seconds %r must be a whole number of seconds within 0-604800" % (grace,))
    return {"target": target, "ports": ports, "deletable": deletable, "comment": comment,
            "expires_at": _parse_expiry(data.get("expires_at")), "grace_seconds": grace}


def find_duplicate(target_value, ports_key):
    return db.session.execute(select(Entry).where(Entry.target == target_value, Entry.ports_key == ports_key)).scalar()


def _duplicate_error(existing):
    return EntryError(409, "duplicate", "an entry for %s%s exists already: id %d" % (
        existing.target, " (%s)" % existing.ports_key if existing.ports_key else "", existing.id))


def _insert(spec, creator, check=True, flush=True):
    """Add a validated entry to the session; returns the Entry. Caller records and commits."""
    target, ports = spec["target"], spec["ports"]
    ports_key = ",".join(ports)
    existing = find_duplicate(target.value, ports_key) if check else None
    if existing is not None:
        raise _duplicate_error(existing)
    entry = Entry(target=target.value, kind=target.kind, ports=ports, ports_key=ports_key,
                  deletable=spec["deletable"], expires_at=spec["expires_at"], comment=spec["comment"],
                  created_by=creator, grace_seconds=spec["grace_seconds"])
    if target.kind == "domain" and not target.wildcard:
        # A wildcard keeps next_resolve_at NULL, so it is never due: it is learned through the gateways' DNS
        # forwarder only (nobody can list a zone's names).
        entry.next_resolve_at = utcnow()
    elif target.kind != "domain":
        entry.addresses.append(EntryAddress(address=str(target.network), source="typed"))
    db.session.add(entry)
    if flush:
        db.session.flush()
    return entry


def create(data, config, creator):
    """Validate and store a new entry with its revision and audit event; return (entry, revision)."""
    spec = validate(data, config)
    try:
        entry = _insert(spec, creator)
        revision = sync_elements({entry: elements_of(entry)})
        audit.record("entry.create", "entry", entry.id, "created %s" % describe(entry), after=to_json(entry),
                     revision=revision)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EntryError(409, "duplicate", "an entry for %s exists already" % spec["target"].value)
    except EntryError:
        db.session.rollback()
        raise
    hub.wake(revision)
    if entry.kind == "domain" and not entry.wildcard and config["resolver_enabled"]:
        _resolve_at_once(entry)
    return entry, revision


# What PATCH may change; the rest of an entry is its identity (target) or the server's bookkeeping.
EDITABLE = ("ports", "deletable", "expires_at", "comment", "grace_seconds")
READ_ONLY = ("id", "target", "kind", "wildcard", "created_by", "created_at", "resolved_at", "resolve_error",
             "capped", "addresses", "elements", "revision")


def etag(entry):
    """The entity tag of an entry's settings (its target and EDITABLE fields): hex, unquoted (HTTP quotes it).

    It changes exactly when one of them does, so a client's If-Match refuses an edit made on a stale read;
    the resolver's address bookkeeping does not change it (an edit of the comment need not race DNS)."""
    text = json.dumps([entry.id, entry.target, sorted(entry.ports or []), bool(entry.deletable),
                       _iso(entry.expires_at), entry.comment or "", entry.grace_seconds], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _check_patch(data):
    """The patch's shape (RFC 7396 merge patch of an entry): a JSON object of EDITABLE fields only."""
    if not isinstance(data, dict):
        raise EntryError(400, "invalid_body", "the body must be a JSON merge patch (RFC 7396): an object of the fields "
                         "to change, such as {\"comment\": \"ticket 4712\"}")
    read_only = sorted(set(data) & set(READ_ONLY))
    if read_only:
        raise EntryError(400, "read_only_field", "%s cannot be changed; %s. Fields that can: %s" % (
            ", ".join(read_only), "the target is the entry's identity: create an entry for the new target and delete "
            "this one" if "target" in read_only else "it is kept by the server", ", ".join(EDITABLE)))
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        raise EntryError(400, "unknown_field", "unknown field(s) %s; fields that can be changed: %s"
                         % (", ".join(unknown), ", ".join(EDITABLE)))
    if "deletable" in data and not isinstance(data["deletable"], bool):
        raise EntryError(400, "invalid_deletable", "deletable must be true or false, not %s" % json.dumps(
            data["deletable"]))


def update(entry_id, data, config, if_match=None, admin=False):
    """Change an entry in place with a JSON merge patch (RFC 7396): a field given is set, null resets it to what
    a creation without it gives (ports: all, expires_at: never, comment: empty, grace_seconds: the default).

    if_match: None (last write wins) or a callable(etag()) -> bool, checked under the entry's row lock, so of two
    edits made on the same read exactly one passes (412 for the other). admin: the caller may change deletable
    (one way only: deletable -> undeletable) and the ports and expiry of an undeletable entry. Validation is the
    creation's (validate). A revision is recorded only when the published elements change (ports); the audit
    event carries before and after. Commits and wakes the hub; returns (entry, revision or None)."""
    _check_patch(data)
    entry = _lock(entry_id)
    target = entry.target
    try:
        if if_match is not None and not if_match(etag(entry)):
            raise EntryError(412, "precondition_failed", "entry %d changed since it was read (If-Match does not "
                             "match its ETag \"%s\"); GET it again, and apply the change to what it is now"
                             % (entry.id, etag(entry)))
        # The creation's validation, on the entry's target and the fields given (null: the field's default).
        spec = validate(dict({k: v for k, v in data.items() if v is not None}, target=entry.target), config)
        new = {field: spec[field] for field in data}
        before = to_json(entry)
        changed = sorted(f for f in new if new[f] != _current(entry, f))
        _check_rights(entry, new, changed, admin)
        if "ports" in changed and find_duplicate(entry.target, ",".join(new["ports"])) is not None:
            raise _duplicate_error(find_duplicate(entry.target, ",".join(new["ports"])))
        revision = None
        if changed:
            for field in changed:
                setattr(entry, field, new[field])
            if "ports" in changed:
                entry.ports_key = ",".join(new["ports"])
                revision = sync_elements({entry: elements_of(entry)})
            db.session.flush()
            audit.record("entry.update", "entry", entry.id, "changed %s of %s" % (", ".join(changed), describe(entry)),
                         before=before, after=to_json(entry), revision=revision)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EntryError(409, "duplicate", "an entry for %s with the ports %s exists already"
                         % (target, ", ".join(data.get("ports") or []) or "(all)"))
    except Exception:
        db.session.rollback()
        raise
    hub.wake(revision)
    return entry, revision


def _current(entry, field):
    """An entry's value of an EDITABLE field in validate's normal form."""
    return {"ports": lambda: sorted(entry.ports or []), "deletable": lambda: bool(entry.deletable),
            "comment": lambda: entry.comment or ""}.get(field, lambda: getattr(entry, field))()


def _lock(entry_id):
    """In a fresh transaction, take the entry's row lock (PostgreSQL, MariaDB; SQLite: the database's write lock)
    and read it as it is now; raise 404 when it is gone. Edits and deletes of one entry queue here, so each applies
    to what the one before left (under REPEATABLE READ too: the snapshot starts after the lock)."""
    db.session.commit()     # end any read transaction of the request (the token's lookup)
    locked = db.session.execute(sql_update(Entry).where(Entry.id == entry_id).values(comment=Entry.comment)).rowcount
    if not locked:
        db.session.rollback()
        raise EntryError(404, "not_found", "entry %s does not exist" % entry_id)
    return db.session.execute(select(Entry).where(Entry.id == entry_id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()


def _check_rights(entry, new, changed, admin):
    """Refuse what the caller may not change (nothing is written yet)."""
    if "deletable" in changed:
        if new["deletable"]:
            raise EntryError(403, "undeletable", "entry %d (%s) was made undeletable and never becomes deletable; "
                             "it leaves only through its expiry" % (entry.id, entry.target))
        if not admin:
            raise EntryError(403, "forbidden", "only an admin may make entry %d (%s) undeletable" % (
                entry.id, entry.target))
    locked = sorted(f for f in changed if f in ("ports", "expires_at", "grace_seconds"))
    if not entry.deletable and locked and not admin:
        raise EntryError(403, "undeletable", "entry %d (%s) is undeletable: only an admin may change its %s (an "
                         "editor may change its comment)" % (entry.id, entry.target, ", ".join(locked)))


def _resolve_at_once(entry):
    """Resolve a new domain in this request, so the answer already shows its addresses."""
    resolver = current_resolver()
    if resolver is None:
        return
    try:
        resolver.resolve_entry_now(entry.id, entry.target)
    except Exception:  # the resolver's loop resolves it at its next pass
        log.exception("could not resolve %s at once", entry.target)
        db.session.rollback()


def domains_view():
    """(digest, [{"entry", "name", "ports"}, ...]) of every domain entry, by id: what the gateways' DNS forwarders
    match answers against (the domains frame, docs/protocol.md). One query of three columns; the digest changes
    exactly when an entry is added or deleted or its name or ports change (caller commits)."""
    rows = db.session.execute(select(Entry.id, Entry.target, Entry.ports).where(Entry.kind == "domain")
                              .order_by(Entry.id)).all()
    items = [{"entry": entry_id, "name": target, "ports": sorted(ports or [])} for entry_id, target, ports in rows]
    text = json.dumps(items, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), items


def describe(entry):
    return entry.target + (" (%s)" % ", ".join(entry.ports) if entry.ports else "")


def delete(entry_id, force=False, reason="deleted"):
    """Delete an entry (unless undeletable) with its revision and audit event; return the revision.

    Under the entry's row lock (_lock), so a delete racing an edit removes what the edit left, never half of it."""
    entry = _lock(entry_id)
    if not entry.deletable and not force:
        db.session.rollback()
        raise EntryError(403, "undeletable", "entry %d (%s) was created as undeletable and cannot be deleted"
                         % (entry.id, entry.target))
    before = to_json(entry)
    revision = sync_elements({entry: set()})
    action = "entry.expire" if reason == "expired" else "entry.delete"
    audit.record(action, "entry", entry.id, "%s %s" % (reason, describe(entry)), before=before, revision=revision,
                 who=("system", "system", "") if reason == "expired" else None)
    db.session.delete(entry)
    db.session.commit()
    hub.wake(revision)
    return revision


def expire(now=None):
    """Delete every entry whose expires_at has passed (undeletable ones too); return the revisions made."""
    now = now or utcnow()
    revisions = []
    for entry_id in db.session.execute(select(Entry.id).where(Entry.expires_at <= now)).scalars().all():
        revisions.append(delete(entry_id, force=True, reason="expired"))
    return revisions


def _bool_arg(value, name):
    if value is None:
        return None
    if value == "true":
        return True
    if value == "false":
        return False
    raise EntryError(400, "invalid_filter", "%s=%s must be true or false" % (name, value))


# A filtered list first collects the matching ids (one scan), up to this many: the total and the page come
# from them, instead of a COUNT scan plus a page scan. Broader matches fall back to COUNT + LIMIT/OFFSET.
ID_SCAN_CAP = 20000


def query(q=None, kind=None, page=1, per_page=50, creator=None, deletable=None, expiring=None):
    """One page of entries, newest first, with the total count."""
    conditions = []
    if q:
        like = "%" + q.lower().replace("%", r"\%").replace("_", r"\_") + "%"
        # Targets are stored lower-case. SQLite's LIKE ignores ASCII case by itself; elsewhere lower() it.
        comment = Entry.comment if db.engine.dialect.name == "sqlite" else func.lower(Entry.comment)
        conditions.append(or_(Entry.target.like(like, escape="\\"), comment.like(like, escape="\\")))
    if kind:
        conditions.append(Entry.kind == kind)
    if creator:
        conditions.append(Entry.created_by == creator)
    deletable = _bool_arg(deletable, "deletable")
    if deletable is not None:
        conditions.append(Entry.deletable == deletable)
    expiring = _bool_arg(expiring, "expiring")
    if expiring is not None:
        conditions.append(Entry.expires_at.is_not(None) if expiring else Entry.expires_at.is_(None))
    load = select(Entry).options(selectinload(Entry.addresses))
    if conditions:
        ids = db.session.execute(select(Entry.id).where(*conditions).order_by(Entry.id.desc())
                                 .limit(ID_SCAN_CAP + 1)).scalars().all()
        if len(ids) <= ID_SCAN_CAP:
            wanted = ids[(page - 1) * per_page:page * per_page]
            rows = db.session.execute(load.where(Entry.id.in_(wanted)).order_by(Entry.id.desc())).scalars() \
                if wanted else []
            return list(rows), len(ids)
    stmt = select(Entry.id).where(*conditions)
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.session.execute(load.where(*conditions).order_by(Entry.id.desc()).limit(per_page)
                              .offset((page - 1) * per_page)).scalars()
    return list(rows), total


def name_candidates(name):
    """The targets that can match the DNS name `name`: itself and '*.' + each parent of at least two labels."""
    labels = name.split(".")
    return [name] + ["*." + ".".join(labels[i:]) for i in range(1, len(labels) - 1)]


def why_name(name):
    """Every domain entry whose target matches the name: the exact entry and each wildcard covering it."""
    candidates = name_candidates(name)
    rows = db.session.execute(select(Entry).where(Entry.target.in_(candidates)).order_by(Entry.id)).scalars().all()
    items = []
    for entry in rows:   # every candidate target matches the name (name_candidates), only domains are names
        wildcard = entry.wildcard
        items.append({"entry_id": entry.id, "target": entry.target, "kind": entry.kind, "wildcard": wildcard,
                      "ports": entry.ports or [], "match": "wildcard" if wildcard else "exact",
                      "resolved_by": "the gateways' DNS forwarder" if wildcard
                      else "the central resolver and the gateways' DNS forwarder",
                      "until": _iso(entry.expires_at), "deletable": entry.deletable})
    return {"name": name, "allowed": bool(items), "internal": [], "entries": items}


def _through(addr):
    """Where an entry's address came from, as "why is this allowed" says it."""
    if addr.source == "learned":
        return "learned through %s's DNS" % (addr.learned_via or "a gateway")
    return {"typed": "the entry's own address", "resolved": "resolved by the central resolver"}.get(
        addr.source, addr.source)


def why(address, config):
    """Every entry that allows `address` (an IP address: with since and until) or a domain name (the exact
    entry and the wildcards that cover it); raises EntryError for anything else."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        try:
            name = normalise_domain(str(address))
        except TargetError:
            raise EntryError(400, "invalid_address", "%r is neither an IP address nor a domain name; give one such "
                             "as 198.51.100.10 or api.example.com" % address)
        return why_name(name)
    # An address is in a network exactly when the network is one of its supernets: at most 33 (129) keys,
    # each an index lookup, whatever the number of entries.
    candidates = [str(ipaddress.ip_network("%s/%d" % (ip, n), strict=False)) for n in range(ip.max_prefixlen + 1)]
    rows = db.session.execute(
        select(EntryAddress, Entry).join(Entry, Entry.id == EntryAddress.entry_id)
        .where(EntryAddress.address.in_(candidates)).order_by(Entry.id)).all()
    internal = [str(n) for n in policy_from(config).internal if ip in n]
    items = []
    for addr, entry in rows:
        learned = addr.source == "learned"
        # A resolved address may also carry a learned expiry (resolver.apply): it counts once the resolver stops
        # returning it and it becomes learned again, not while the resolver holds it.
        until = min([t for t in (entry.expires_at, addr.grace_until, addr.expires_at if learned else None)
                     if t is not None], default=None)
        items.append({"entry_id": entry.id, "target": entry.target, "kind": entry.kind, "ports": entry.ports or [],
                      "network": addr.address, "source": addr.source, "since": _iso(addr.first_seen),
                      "until": _iso(until), "published": not addr.refused, "refused": addr.refused or None,
                      "deletable": entry.deletable, "last_seen": _iso(addr.last_seen),
                      "learned_via": addr.learned_via or None if learned else None,
                      "expires_at": _iso(addr.expires_at) if learned else None,
                      "through": _through(addr)})
    return {"address": str(ip), "allowed": any(i["published"] for i in items), "internal": internal,
            "entries": items}


EXPORT_COLUMNS = ("id", "target", "kind", "ports", "deletable", "expires_at", "comment", "created_by", "created_at")


def export_rows():
    """Every entry as a dict of EXPORT_COLUMNS (ports joined with spaces), oldest first."""
    for entry in db.session.execute(select(Entry).order_by(Entry.id)).scalars():
        data = to_json(entry)
        yield {k: data[k] for k in EXPORT_COLUMNS}


def import_entries(items, config, creator, on_duplicate="skip"):
    """Validate every item, then store all of them in one transaction with one revision; all or nothing.

    Returns {"created": [...ids], "skipped": [...], "revision": n}. Raises EntryError listing every bad item
    (by its 1-based position) before anything is written.
    """
    if on_duplicate not in ("skip", "error"):
        raise EntryError(400, "invalid_on_duplicate", "on_duplicate must be skip or error, not %r" % on_duplicate)
    if not isinstance(items, list):
        raise EntryError(400, "invalid_body", "entries must be a list of entry objects")
    if len(items) > 100000:
        raise EntryError(413, "too_many", "%d entries in one import; split it into parts of at most 100000"
                         % len(items))
    problems, specs, seen = [], [], {}
    for number, item in enumerate(items, 1):
        try:
            if isinstance(item, dict):
                item = {k: v for k, v in item.items()
                        if k not in ("id", "kind", "wildcard", "created_by", "created_at", "addresses", "revision", "resolved_at",
                                     "resolve_error", "capped")}
            spec = validate(item, config)
        except EntryError as exc:
            problems.append("item %d: %s" % (number, exc.message))
            continue
        key = (spec["target"].value, ",".join(spec["ports"]))
        if key in seen:
            problems.append("item %d: %s repeats item %d" % (number, key[0], seen[key]))
            continue
        seen[key] = number
        specs.append((number, spec))
    created, skipped = [], []
    if not problems:
        # One query per 5,000 targets instead of one per item.
        found = {}
        targets = sorted({spec["target"].value for _number, spec in specs})
        for i in range(0, len(targets), 5000):
            for row in db.session.execute(select(Entry).where(Entry.target.in_(targets[i:i + 5000]))).scalars():
                found[(row.target, row.ports_key)] = row
        for number, spec in specs:
            existing = found.get((spec["target"].value, ",".join(spec["ports"])))
            if existing is not None:
                if on_duplicate == "error":
                    problems.append("item %d: %s" % (number, _duplicate_error(existing).message))
                else:
                    skipped.append({"item": number, "id": existing.id, "target": existing.target})
    if problems:
        shown = problems[:50] + (["... and %d more" % (len(problems) - 50)] if len(problems) > 50 else [])
        raise EntryError(400, "invalid_import", "nothing was imported; fix these and retry:\n" + "\n".join(shown))
    skip = {s["item"] for s in skipped}
    added = set()
    try:
        # Core statements with RETURNING: one batched INSERT per table, no ORM bookkeeping per row.
        now = utcnow()
        rows = []
        for number, spec in specs:
            if number in skip:
                continue
            target = spec["target"]
            rows.append({"target": target.value, "kind": target.kind, "ports": spec["ports"],
                         "ports_key": ",".join(spec["ports"]), "deletable": spec["deletable"],
                         "expires_at": spec["expires_at"], "comment": spec["comment"], "created_by": creator,
                         "created_at": now, "grace_seconds": spec["grace_seconds"],
                         "next_resolve_at": now if target.kind == "domain" and not target.wildcard else None,
                         "resolve_error": "",
                         "capped": False, "_network": None if target.kind == "domain" else str(target.network)})
        address_rows, element_rows = [], []
        for i in range(0, len(rows), 5000):
            part = rows[i:i + 5000]
            ids = db.session.execute(
                insert(Entry).returning(Entry.id, sort_by_parameter_order=True),
                [{k: v for k, v in r.items() if k != "_network"} for r in part]).scalars().all()
            for entry_id, row in zip(ids, part):
                created.append(entry_id)
                if row["_network"]:
                    address_rows.append({"entry_id": entry_id, "address": row["_network"], "source": "typed",
                                         "first_seen": now, "last_seen": now, "refused": ""})
                    for port in (row["ports"] or [None]):
                        element = Element(row["_network"], port).text
                        element_rows.append({"entry_id": entry_id, "element": element})
                        added.add(element)
        if address_rows:
            db.session.execute(insert(EntryAddress), address_rows)
        if element_rows:
            db.session.execute(insert(EntryElement), element_rows)
        new_ids = list(created)
        existing = set()
        ordered = sorted(added)
        for i in range(0, len(ordered), 5000):   # stay under the database's limit of bound parameters
            existing |= set(db.session.execute(select(EntryElement.element).where(
                EntryElement.element.in_(ordered[i:i + 5000]),
                EntryElement.entry_id.not_in(new_ids) if len(new_ids) <= 5000 else
                EntryElement.entry_id < min(new_ids))).scalars())
        revision = changelog.record(added - existing, set(), renamed=added & existing)
        audit.record("entry.import", "entry", "", "imported %d entries (%d skipped)" % (len(created), len(skipped)),
                     after={"created": new_ids, "skipped": skipped}, revision=revision)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    hub.wake(revision)
    return {"created": new_ids, "skipped": skipped, "revision": revision}


def _iso(value):
    return value.isoformat() + "Z" if value else None


def to_json(entry):
    iso = _iso
    return {
        "id": entry.id,
        "target": entry.target,
        "kind": entry.kind,
        "wildcard": entry.wildcard,
        "ports": entry.ports or [],
        "deletable": entry.deletable,
        "expires_at": iso(entry.expires_at),
        "comment": entry.comment,
        "created_by": entry.created_by,
        "created_at": iso(entry.created_at),
        "grace_seconds": entry.grace_seconds,
        "resolved_at": iso(entry.resolved_at),
        "resolve_error": entry.resolve_error or None,
        "capped": bool(entry.capped),
        "addresses": [{"address": a.address, "source": a.source, "first_seen": iso(a.first_seen),
                       "last_seen": iso(a.last_seen), "grace_until": iso(a.grace_until),
                       "published": not a.refused, "refused": a.refused or None,
                       "learned_via": (a.learned_via or None) if a.source == "learned" else None,
                       "expires_at": iso(a.expires_at) if a.source == "learned" else None}
                      for a in entry.addresses],
    }
