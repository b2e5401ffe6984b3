"""Allowlist entries: validation, creation and deletion, each committed with its change-log revision."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from og_kernel.og_elements import Element
from og_kernel.og_netpolicy import AddressPolicy, TargetError, format_port_spec, parse_port_spec

from ..models import Entry, EntryAddress, EntryElement, db, utcnow
from . import changelog


class EntryError(Exception):
    """A refused entry operation: status, code and a message naming the value and the fix."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def policy_from(config):
    return AddressPolicy(config["internal_networks"], config["min_prefix_v4"], config["min_prefix_v6"])


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
        for port in (entry.ports or [None]):
            result.add(Element(address.address, port).text)
    return result


def _sync_elements(entry, wanted):
    """Make entry_elements of this entry equal `wanted`; log the change of the union. Caller commits."""
    db.session.flush()
    have = set(db.session.execute(select(EntryElement.element).where(EntryElement.entry_id == entry.id)).scalars())
    add, remove = wanted - have, have - wanted
    others = set()
    touched = add | remove
    if touched:
        others = set(db.session.execute(
            select(EntryElement.element).where(EntryElement.element.in_(touched), EntryElement.entry_id != entry.id)
        ).scalars())
    for element in add:
        db.session.add(EntryElement(entry_id=entry.id, element=element))
    if remove:
        db.session.execute(EntryElement.__table__.delete().where(
            EntryElement.entry_id == entry.id, EntryElement.element.in_(remove)))
    return changelog.record(add - others, remove - others)


def create(data, config, creator):
    """Validate and store a new entry with its revision; return (entry, revision)."""
    if not isinstance(data, dict):
        raise EntryError(400, "invalid_body", "the body must be a JSON object such as {\"target\": \"198.51.100.10\"}")
    unknown = sorted(set(data) - {"target", "ports", "deletable", "expires_at", "comment"})
    if unknown:
        raise EntryError(400, "unknown_field", "unknown field(s) %s; known fields are target, ports, deletable, "
                         "expires_at, comment" % ", ".join(unknown))
    if "target" not in data:
        raise EntryError(400, "missing_target", "target is required: an IP address, a CIDR or a domain name")
    try:
        target = policy_from(config).parse_target(data["target"])
    except TargetError as exc:
        raise EntryError(400, "invalid_target", str(exc))
    ports = _parse_ports(data.get("ports"))
    deletable = data.get("deletable", True)
    if not isinstance(deletable, bool):
        raise EntryError(400, "invalid_deletable", "deletable must be true or false")
    comment = data.get("comment", "") or ""
    if not isinstance(comment, str) or len(comment) > 2000:
        raise EntryError(400, "invalid_comment", "comment must be a string of at most 2000 characters")
    expires_at = _parse_expiry(data.get("expires_at"))

    ports_key = ",".join(ports)
    existing = db.session.execute(select(Entry).where(Entry.target == target.value, Entry.ports_key == ports_key)).scalar()
    if existing is not None:
        raise EntryError(409, "duplicate", "an entry for %s%s exists already: id %d" % (
            target.value, " (%s)" % ports_key if ports_key else "", existing.id))
    entry = Entry(target=target.value, kind=target.kind, ports=ports, ports_key=ports_key, deletable=deletable,
                  expires_at=expires_at, comment=comment, created_by=creator)
    if target.kind != "domain":
        entry.addresses.append(EntryAddress(address=str(target.network), source="typed"))
    db.session.add(entry)
    try:
        revision = _sync_elements(entry, elements_of(entry))
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EntryError(409, "duplicate", "an entry for %s exists already" % target.value)
    return entry, revision


def delete(entry_id, force=False):
    """Delete an entry (unless undeletable) with its revision; return the revision."""
    entry = db.session.get(Entry, entry_id)
    if entry is None:
        raise EntryError(404, "not_found", "entry %s does not exist" % entry_id)
    if not entry.deletable and not force:
        raise EntryError(403, "undeletable", "entry %d (%s) was created as undeletable and cannot be deleted"
                         % (entry.id, entry.target))
    revision = _sync_elements(entry, set())
    db.session.delete(entry)
    db.session.commit()
    return revision


def expire(now=None):
    """Delete every entry whose expires_at has passed; return the revisions made."""
    now = now or utcnow()
    revisions = []
    for entry_id in db.session.execute(select(Entry.id).where(Entry.expires_at <= now)).scalars().all():
        revisions.append(delete(entry_id, force=True))
    return revisions


def query(q=None, kind=None, page=1, per_page=50):
    """One page of entries, newest first, with the total count."""
    stmt = select(Entry)
    if q:
        like = "%" + q.lower().replace("%", r"\%").replace("_", r"\_") + "%"
        stmt = stmt.where(or_(Entry.target.like(like, escape="\\"), func.lower(Entry.comment).like(like, escape="\\")))
    if kind:
        stmt = stmt.where(Entry.kind == kind)
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.session.execute(stmt.order_by(Entry.id.desc()).limit(per_page).offset((page - 1) * per_page)).scalars()
    return list(rows), total


def to_json(entry):
    def iso(value):
        return value.isoformat() + "Z" if value else None
    return {
        "id": entry.id,
        "target": entry.target,
        "kind": entry.kind,
        "ports": entry.ports or [],
        "deletable": entry.deletable,
        "expires_at": iso(entry.expires_at),
        "comment": entry.comment,
        "created_by": entry.created_by,
        "created_at": iso(entry.created_at),
        "addresses": [{"address": a.address, "source": a.source, "first_seen": iso(a.first_seen),
                       "last_seen": iso(a.last_seen)} for a in entry.addresses],
    }
