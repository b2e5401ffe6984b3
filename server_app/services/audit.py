"""The audit log: append-only records of every change, written in the same transaction as the change, and of
every refused change (outcome "refused", with the reason the actor was given), written on its own."""

from __future__ import annotations

from flask import g, has_request_context, request
from sqlalchemy import func, or_, select

from ..extensions import db
from ..models import AuditEvent

OUTCOMES = ("done", "refused")
# Offered by the audit page's action filter (any other action is filtered by too).
KNOWN_ACTIONS = ("entry.", "entry.create", "entry.update", "entry.delete", "entry.expire", "entry.import",
                 "entry.resolve", "entry.learn", "token.", "token.create", "token.revoke", "user.", "user.create",
                 "user.login", "user.login_failed", "user.logout", "user.password", "user.role", "user.unlock",
                 "user.disable", "user.enable", "user.delete")
# The names of the objects in before/after that `target` is taken from, first found first.
TARGET_KEYS = ("target", "username", "name")
# The fields of a refused request kept in its event (never a password or a token's secret), each cut to 255.
KEPT_FIELDS = ("target", "ports", "deletable", "expires_at", "comment", "grace_seconds", "role", "name", "username",
               "on_duplicate")
# A refused request's view -> (action, object type); other views are audited under their endpoint's name.
ENDPOINT_ACTIONS = {
    "create_entry": ("entry.create", "entry"), "delete_entry": ("entry.delete", "entry"),
    "confirm_delete": ("entry.delete", "entry"), "update_entry": ("entry.update", "entry"),
    "edit_entry": ("entry.update", "entry"), "import_entries": ("entry.import", "entry"),
    "create_token": ("token.create", "token"), "revoke_token": ("token.revoke", "token"),
    "confirm_revoke": ("token.revoke", "token"), "create_user": ("user.create", "user"),
    "user_action": ("user.update", "user"), "confirm_user_action": ("user.update", "user"),
}


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


def _target(*objects):
    for obj in objects:
        if isinstance(obj, dict):
            for key in TARGET_KEYS:
                if isinstance(obj.get(key), str) and obj[key]:
                    return obj[key][:255]
    return ""


def record(action, object_type, object_id, summary, before=None, after=None, revision=None, who=None, target=None,
           outcome="done", reason=None):
    """Add an audit event to the session; the caller's commit makes it durable together with the change.

    `target` is taken from after or before (their target, username or name) unless given."""
    name, kind, remote = who or actor()
    event = AuditEvent(actor=name[:128], actor_kind=kind, remote_addr=remote[:64], action=action[:32],
                       object_type=object_type[:16], object_id=str(object_id)[:64], summary=summary,
                       before=before, after=after, revision=revision,
                       target=(target if target is not None else _target(after, before))[:255], outcome=outcome,
                       reason=reason)
    db.session.add(event)
    return event


def request_fields():
    """What the current request asked for (JSON body or form), without secrets: the `after` of a refusal."""
    if not has_request_context():
        return None
    body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if not isinstance(body, dict):
        return None
    kept = {}
    for key in KEPT_FIELDS:
        if key in body:
            value = body[key]
            kept[key] = value[:255] if isinstance(value, str) else value if isinstance(value, (bool, int)) else \
                [str(v)[:64] for v in value[:32]] if isinstance(value, list) else str(value)[:255]
    return kept or None


def refused(reason, action=None, object_type=None, object_id="", before=None, asked=None, target=None, who=None):
    """Audit a refused action in a transaction of its own: whatever the refused request had added to the session
    is rolled back first (nothing half-applied), then the event is committed.

    Without `action` the current request's view names it (ENDPOINT_ACTIONS, else the endpoint itself); `asked`
    defaults to the request's fields (request_fields) and is stored as the event's after."""
    db.session.rollback()
    if action is None:
        endpoint = (request.endpoint or "request") if has_request_context() else "system"
        action, object_type = ENDPOINT_ACTIONS.get(endpoint.rpartition(".")[2], (endpoint, object_type or "request"))
        if has_request_context() and not object_id:
            args = request.view_args or {}
            object_id = next((args[k] for k in ("entry_id", "user_id", "token_id") if k in args), "")
    if asked is None:
        asked = request_fields()
    if target is None:
        target = _target(asked, before) or (request.path if has_request_context() and object_type == "request"
                                            else "")
    event = record(action, object_type or "request", object_id, "refused %s: %s" % (action, reason), before=before,
                   after=asked, who=who, target=target, outcome="refused", reason=reason)
    db.session.commit()
    return event


def _like(value):
    return "%" + value.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def query(actor=None, action=None, object_type=None, object_id=None, since=None, until=None, q=None, page=1,
          per_page=50, target=None, outcome=None):
    """Events newest first. actor, action, object_type, object_id and outcome match exactly; an action ending in
    '.' or '*' matches every action it starts (entry. -> entry.create, entry.delete ...); target matches the
    event's target or object id exactly, or (with a '*' in it) as a pattern; q searches the summaries."""
    stmt = select(AuditEvent)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action:
        if action.endswith(("*", ".")):
            prefix = action.rstrip("*")
            stmt = stmt.where(AuditEvent.action.like(prefix.replace("%", r"\%").replace("_", r"\_") + "%",
                                                     escape="\\"))
        else:
            stmt = stmt.where(AuditEvent.action == action)
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEvent.object_id == str(object_id))
    if target:
        if "*" in target:
            pattern = target.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_").replace("*", "%")
            stmt = stmt.where(func.lower(AuditEvent.target).like(pattern, escape="\\"))
        else:
            stmt = stmt.where(or_(AuditEvent.target == target, AuditEvent.object_id == target))
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    if q:
        stmt = stmt.where(func.lower(AuditEvent.summary).like(_like(q), escape="\\"))
    total = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.session.execute(stmt.order_by(AuditEvent.id.desc()).limit(per_page)
                              .offset((page - 1) * per_page)).scalars()
    return list(rows), total


def changes(event):
    """The fields an event's before and after differ in, as [(field, before, after)] (all of after for a create,
    all of before for a delete, what was asked for a refusal); values as stored (JSON)."""
    before, after = event.before or {}, event.after or {}
    keys = list(before) + [k for k in after if k not in before]
    if event.outcome == "refused":
        return [(k, before.get(k), after.get(k)) for k in keys]
    return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]


def to_json(event):
    return {"id": event.id, "at": event.at.isoformat() + "Z", "actor": event.actor, "actor_kind": event.actor_kind,
            "remote_addr": event.remote_addr, "action": event.action, "object_type": event.object_type,
            "object_id": event.object_id, "target": event.target or "", "outcome": event.outcome or "done",
            "reason": event.reason, "summary": event.summary, "before": event.before, "after": event.after,
            "revision": event.revision}
