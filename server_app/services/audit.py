"""The audit log: append-only records of every change, written in the same transaction as the change."""

from __future__ import annotations

from flask import g, has_request_context, request
from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditEvent


def actor():
    """(name, kind, remote address) of whoever makes the current request; the system outside requests."""
    if not has_request_context():
        return "system", "system", ""
    remote = request.remote_addr or ""   # behind a proxy, configure ProxyFix to trust X-Forwarded-For
    user = getattr(g, "user", None)
    if user is not None:
        return user.username, "user", remote
    token = getattr(g, "token", None)
    if token is not None:
        return token.name, "token", remote
    return "anonymous", "anonymous", remote


def record(action, object_type, object_id, summary, before=None, after=None, revision=None, who=None):
    """Add an audit event to the session; the caller's commit makes it durable together with the change."""
    name, kind, remote = who or actor()
    event = AuditEvent(actor=name, actor_kind=kind, remote_addr=remote, action=action, object_type=object_type,
                       object_id=str(object_id), summary=summary, before=before, after=after, revision=revision)
    db.session.add(event)
    return event


def query(actor=None, action=None, object_type=None, object_id=None, since=None, until=None, q=None, page=1,
          per_page=50):
    stmt = select(AuditEvent)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEvent.object_id == str(object_id))
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    if q:
        like = "%" + q.lower().replace("%", r"\%").replace("_", r"\_") + "%"
        stmt = stmt.where(func.lower(AuditEvent.summary).like(like, escape="\\"))
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.session.execute(stmt.order_by(AuditEvent.id.desc()).limit(per_page)
                              .offset((page - 1) * per_page)).scalars()
    return list(rows), total


def to_json(event):
    return {"id": event.id, "at": event.at.isoformat() + "Z", "actor": event.actor, "actor_kind": event.actor_kind,
            "remote_addr": event.remote_addr, "action": event.action, "object_type": event.object_type,
            "object_id": event.object_id, "summary": event.summary, "before": event.before, "after": event.after,
            "revision": event.revision}
