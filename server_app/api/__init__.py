"""The REST API under /api/v1: thin views over the services, one JSON error shape."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from ..models import Entry, Gateway, db
from ..services import changelog, entries, tokens

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def error(status, code, message):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def requires(action):
    """Authenticate the Bearer token and check that its role grants `action`."""
    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            token = tokens.authenticate(request.headers.get("Authorization"))
            if token is None:
                return error(401, "unauthorized", "a valid API token is required: Authorization: Bearer <token>")
            if not tokens.allowed(token, action):
                return error(403, "forbidden", "the token %r has the role %s, which may not %s" % (
                    token.name, token.role, {"read": "read", "write": "change entries",
                                             "admin": "administer"}[action]))
            g.token = token
            return view(*args, **kwargs)
        return wrapped
    return decorator


def _json_body():
    body = request.get_json(silent=True)
    if body is None:
        raise entries.EntryError(400, "invalid_json", "the body must be JSON with Content-Type: application/json")
    return body


@bp.errorhandler(entries.EntryError)
def entry_error(exc):
    return error(exc.status, exc.code, exc.message)


@bp.get("/entries")
@requires("read")
def list_entries():
    try:
        page = int(request.args.get("page", 1))
        per_page = int(request.args.get("per_page", 50))
    except ValueError:
        return error(400, "invalid_page", "page and per_page must be whole numbers")
    if page < 1 or not 1 <= per_page <= 500:
        return error(400, "invalid_page", "page must be 1 or more and per_page within 1-500")
    kind = request.args.get("kind") or None
    if kind not in (None, "ip", "cidr", "domain"):
        return error(400, "invalid_kind", "kind %r must be ip, cidr or domain" % kind)
    rows, total = entries.query(request.args.get("q"), kind, page, per_page)
    return jsonify({"items": [entries.to_json(e) for e in rows], "total": total, "page": page,
                    "per_page": per_page, "revision": changelog.head_revision()})


@bp.post("/entries")
@requires("write")
def create_entry():
    entry, revision = entries.create(_json_body(), current_app.config["OG"], g.token.name)
    current_app.extensions["og_hub"].notify()
    body = entries.to_json(entry)
    body["revision"] = revision
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_entry", entry_id=entry.id)
    return response


@bp.get("/entries/<int:entry_id>")
@requires("read")
def get_entry(entry_id):
    entry = db.session.get(Entry, entry_id)
    if entry is None:
        return error(404, "not_found", "entry %d does not exist" % entry_id)
    return jsonify(entries.to_json(entry))


@bp.delete("/entries/<int:entry_id>")
@requires("write")
def delete_entry(entry_id):
    entries.delete(entry_id)
    current_app.extensions["og_hub"].notify()
    return "", 204


@bp.get("/gateways")
@requires("read")
def list_gateways():
    head = changelog.head_revision()
    rows = db.session.query(Gateway).order_by(Gateway.name).all()

    def iso(value):
        return value.isoformat() + "Z" if value else None
    return jsonify({"revision": head, "items": [{
        "name": gw.name, "connected": gw.connected, "address": gw.address, "agent_version": gw.agent_version,
        "applied_revision": gw.applied_revision, "lag": max(0, head - gw.applied_revision),
        "digest_match": gw.digest_match and gw.applied_revision == head, "elements": gw.elements,
        "connected_at": iso(gw.connected_at), "last_seen": iso(gw.last_seen)} for gw in rows]})


def register_errors(app):
    @app.errorhandler(HTTPException)
    def http_error(exc):
        return error(exc.code, exc.name.lower().replace(" ", "_"), exc.description)

    @app.errorhandler(Exception)
    def server_error(exc):
        app.logger.exception("unhandled error")
        return error(500, "internal_error", "the server failed to handle this request; see its log")
