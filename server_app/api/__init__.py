"""The REST API under /api/v1: thin views over the services, one JSON error shape."""

from __future__ import annotations

import csv
import datetime as dt
import io
from functools import wraps

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from ..errors import BodyError, PageError, QueryError, RequestError, TimeError, error
from ..extensions import db
from ..models import Entry
from ..services import audit, blocked, changelog, entries, fleet, gateways, tokens, traffic, unlisted
from ..version import __version__
from .openapi import document

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def requires(action):
    """Authenticate the Bearer token and check that its role grants `action`."""
    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            token = tokens.authenticate(request.headers.get("Authorization"))
            if token is None:
                return error(401, "unauthorized", "a valid API token is required: Authorization: Bearer <token>")
            g.token = token
            if not tokens.allowed(token, action):
                message = "the token %r has the role %s, which may not %s" % (
                    token.name, token.role, {"read": "read", "write": "change entries", "admin": "administer"}[action])
                audit.refused(message)
                return error(403, "forbidden", message)
            return view(*args, **kwargs)
        return wrapped
    return decorator


@bp.errorhandler(RequestError)
def refused(exc):
    """A refused change by a known token (bad input, an undeletable entry, an internal address) is audited with
    its reason; the answer is the one JSON error shape."""
    if request.method not in ("GET", "HEAD") and g.get("token") is not None:
        db.session.rollback()
        entry_id = (request.view_args or {}).get("entry_id")
        entry = db.session.get(Entry, entry_id) if entry_id is not None else None
        audit.refused(exc.message, before=entries.to_json(entry) if entry is not None else None)
    return error(exc.status, exc.code, exc.message)


# The query parameters each endpoint knows (the OpenAPI document lists the same); others are refused, so a
# typo such as ?kindd=ip is an error instead of a silently unfiltered answer.
QUERY = {
    "api.list_entries": {"page", "per_page", "q", "kind", "creator", "deletable", "expiring"},
    "api.list_audit": {"page", "per_page", "actor", "action", "object_type", "object_id", "target", "outcome", "q",
                       "since", "until"},
    "api.export_entries": {"format"},
    "api.import_entries": {"on_duplicate"},
    "api.traffic_summary": {"window", "gateway"},
    "api.entry_traffic": {"window", "gateway"},
    "api.list_unlisted": {"page", "per_page", "sort", "gateway", "name", "since"},
    "api.traffic_series": {"window", "gateway", "destination", "entry", "client", "format"},
    "api.traffic_clients": {"window", "gateway", "limit", "format"},
    "api.list_blocked": {"page", "per_page", "client", "gateway", "destination", "observed", "sort", "name"},
}


@bp.before_request
def known_query_parameters():
    unknown = sorted(set(request.args) - QUERY.get(request.endpoint, set()))
    if unknown and request.endpoint != "api.openapi_document":
        known = sorted(QUERY.get(request.endpoint, set()))
        return error(400, "unknown_parameter", "unknown query parameter(s) %s; %s" % (
            ", ".join(repr(u) for u in unknown),
            "known: " + ", ".join(known) if known else "this endpoint takes none"))
    return None


def _json_body():
    body = request.get_json(silent=True)
    if body is None:
        raise BodyError(400, "invalid_json", "the body must be JSON with Content-Type: application/json")
    return body


def _page_args():
    try:
        page = int(request.args.get("page", 1))
        per_page = int(request.args.get("per_page", 50))
    except ValueError:
        raise PageError(400, "invalid_page", "page and per_page must be whole numbers, not %r and %r" % (
            request.args.get("page"), request.args.get("per_page")))
    if not 1 <= page <= 10 ** 9 or not 1 <= per_page <= 500:
        raise PageError(400, "invalid_page", "page must lie within 1-1000000000 and per_page within 1-500")
    return page, per_page


@bp.get("/entries")
@requires("read")
def list_entries():
    page, per_page = _page_args()
    kind = request.args.get("kind")
    if kind not in (None, "ip", "cidr", "domain"):
        return error(400, "invalid_kind", "kind %r must be ip, cidr or domain" % kind)
    rows, total = entries.query(request.args.get("q"), kind, page, per_page, creator=request.args.get("creator"),
                                deletable=request.args.get("deletable"), expiring=request.args.get("expiring"))
    return jsonify({"items": [entries.to_json(e) for e in rows], "total": total, "page": page,
                    "per_page": per_page, "revision": changelog.head_revision()})


@bp.post("/entries")
@requires("write")
def create_entry():
    entry, revision = entries.create(_json_body(), current_app.config["OG"], g.token.name)
    return _created(entry, revision)


def _created(entry, revision):
    """201 with the new entry, its revision and its Location."""
    body = entries.to_json(entry)
    body["revision"] = revision
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_entry", entry_id=entry.id)
    return response


@bp.get("/entries/<id:entry_id>")
@requires("read")
def get_entry(entry_id):
    entry = db.session.get(Entry, entry_id)
    if entry is None:
        return error(404, "not_found", "entry %d does not exist" % entry_id)
    body = entries.to_json(entry)
    body["elements"] = fleet.entry_elements(entry)
    response = jsonify(body)
    response.set_etag(entries.etag(entry))
    return response


MERGE_PATCH = ("application/merge-patch+json", "application/json")


def _if_match():
    """None without an If-Match header (last write wins), else a test of an entry's ETag: strong comparison
    (RFC 9110 13.1.1), '*' matching any current entry."""
    if "If-Match" not in request.headers:
        return None
    wanted = request.if_match
    return wanted.contains


@bp.patch("/entries/<id:entry_id>")
@requires("write")
def update_entry(entry_id):
    if request.mimetype not in MERGE_PATCH:
        return error(415, "unsupported_media_type", "the body must be a JSON merge patch (RFC 7396) with "
                     "Content-Type: application/merge-patch+json (or application/json), not %r" % request.mimetype)
    body = request.get_json(silent=True, force=True)
    if body is None:
        raise BodyError(400, "invalid_json", "the body must be a JSON object of the fields to change, such as "
                        "{\"comment\": \"ticket 4712\"}")
    entry, revision = entries.update(entry_id, body, current_app.config["OG"], if_match=_if_match(),
                                     admin=tokens.allowed(g.token, "admin"))
    data = entries.to_json(entry)
    data["revision"] = revision
    response = jsonify(data)
    response.set_etag(entries.etag(entry))
    return response


@bp.delete("/entries/<id:entry_id>")
@requires("write")
def delete_entry(entry_id):
    entries.delete(entry_id)
    return "", 204


@bp.get("/entries/export")
@requires("read")
def export_entries():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        return error(400, "invalid_format", "format %r must be json or csv" % fmt)
    rows = list(entries.export_rows())
    if fmt == "json":
        return jsonify({"entries": rows, "revision": changelog.head_revision()})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=entries.EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(dict(row, ports=" ".join(row["ports"]), deletable="true" if row["deletable"] else "false",
                             expires_at=row["expires_at"] or ""))
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=outputguard-entries.csv"})


def _csv_items(text):
    try:
        return _csv_rows(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise BodyError(400, "invalid_csv", "the CSV cannot be read (%s); quote fields that hold line breaks, as "
                        "GET /entries/export writes them" % exc) from None


def _csv_rows(reader):
    if not reader.fieldnames or "target" not in reader.fieldnames:
        raise BodyError(400, "invalid_csv", "the CSV needs a header line with at least a target column "
                        "(target,ports,deletable,expires_at,comment)")
    items = []
    for row in reader:
        item = {"target": (row.get("target") or "").strip()}
        if (row.get("ports") or "").strip():
            item["ports"] = (row["ports"] or "").replace(",", " ").split()
        if (row.get("deletable") or "").strip():
            value = row["deletable"].strip().lower()
            item["deletable"] = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
                value, row["deletable"])
        if (row.get("expires_at") or "").strip():
            item["expires_at"] = row["expires_at"].strip()
        if row.get("comment"):
            item["comment"] = row["comment"]
        items.append(item)
    return items


@bp.post("/entries/import")
@requires("write")
def import_entries():
    on_duplicate = request.args.get("on_duplicate", "skip")
    if request.mimetype == "text/csv":
        items = _csv_items(request.get_data(as_text=True))
    else:
        body = _json_body()
        if not isinstance(body, dict) or set(body) != {"entries"}:
            raise BodyError(400, "invalid_body", "the body must be {\"entries\": [...]} (as GET "
                            "/api/v1/entries/export gives it), or CSV with Content-Type: text/csv")
        items = body["entries"]
    result = entries.import_entries(items, current_app.config["OG"], g.token.name, on_duplicate)
    return jsonify(result), 201 if result["created"] else 200


@bp.get("/addresses/<path:address>")
@requires("read")
def why_allowed(address):
    return jsonify(fleet.why(address, current_app.config["OG"]))


@bp.get("/audit")
@requires("read")
def list_audit():
    page, per_page = _page_args()
    since, until = (_time_arg(name) for name in ("since", "until"))
    outcome = request.args.get("outcome") or None
    if outcome not in (None,) + audit.OUTCOMES:
        return error(400, "invalid_outcome", "outcome %r must be one of %s" % (outcome, ", ".join(audit.OUTCOMES)))
    rows, total = audit.query(actor=request.args.get("actor"), action=request.args.get("action"),
                              object_type=request.args.get("object_type"), object_id=request.args.get("object_id"),
                              target=request.args.get("target"), outcome=outcome,
                              since=since, until=until, q=request.args.get("q"), page=page, per_page=per_page)
    return jsonify({"items": [audit.to_json(e) for e in rows], "total": total, "page": page, "per_page": per_page})


def _time_arg(name):
    if name not in request.args:
        return None
    value = request.args[name]
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(400, "invalid_time", "%s=%s is not an ISO 8601 time such as 2026-11-23T10:00:00Z"
                        % (name, value))
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


@bp.get("/dns/unlisted")
@requires("read")
def list_unlisted():
    """Names no entry allows that the gateways' DNS forwarders were asked for (docs/dns.md, "Unlisted names")."""
    page, per_page = _page_args()
    sort = request.args.get("sort", "newest")
    if sort not in unlisted.SORTS:
        raise QueryError(400, "invalid_sort", "sort=%s must be newest (last seen first) or busiest (most queries "
                         "first)" % sort)
    name = request.args.get("name") or None
    if name is not None and (len(name) > 255 or not name.strip() or name.strip() != name):
        raise QueryError(400, "invalid_name", "name=%r must be 1-255 characters without surrounding spaces: a part "
                         "of a name (partner) or *.example.com for the names under example.com" % name[:300])
    since = _time_arg("since")
    rows, total = unlisted.query(gateway=request.args.get("gateway") or None, name=name, since=since, sort=sort,
                                 page=page, per_page=per_page)
    cfg = current_app.config["OG"]
    return jsonify({"items": [unlisted.to_json(r) for r in rows], "total": total, "page": page,
                    "per_page": per_page, "sort": sort, "max_rows": cfg["dns_unlisted_max_rows"],
                    "retention_days": cfg["dns_unlisted_retention_days"]})


@bp.get("/tokens")
@requires("admin")
def list_tokens():
    return jsonify({"items": [tokens.to_json(t) for t in tokens.all_tokens()]})


@bp.post("/tokens")
@requires("admin")
def create_token():
    body = _json_body()
    if not isinstance(body, dict) or set(body) - {"name", "role"} or not isinstance(body.get("name"), str) \
            or not body.get("name", "").strip() or len(body["name"]) > 128:
        return error(400, "invalid_token", "the body must be {\"name\": \"<1-128 characters>\", \"role\": "
                     "\"viewer|editor|admin|gateway\"}")
    if body.get("role") not in tokens.ROLES:
        return error(400, "invalid_role", "role %r must be one of %s" % (body.get("role"), ", ".join(tokens.ROLES)))
    if tokens.by_name(body["name"].strip()) is not None:
        return error(409, "duplicate", "a token named %r exists already" % body["name"].strip())
    token, secret = tokens.create(body["role"], body["name"].strip(), created_by=g.token.name)
    data = tokens.to_json(token)
    data["token"] = secret   # shown once
    return jsonify(data), 201


@bp.delete("/tokens/<id:token_id>")
@requires("admin")
def revoke_token(token_id):
    token = tokens.revoke(token_id)
    if token is None:
        return error(404, "not_found", "token %d does not exist" % token_id)
    return "", 204


def _traffic_args():
    window = request.args.get("window", "1h")
    try:
        since = traffic.window(window)
    except traffic.TrafficError as exc:
        raise QueryError(400, "invalid_window", str(exc))
    return window, since, request.args.get("gateway") or None


def _counts(row):
    return dict(zip(traffic.FIELDS, (int(v or 0) for v in row)))


@bp.get("/traffic")
@requires("read")
def traffic_summary():
    window, since, gateway = _traffic_args()
    return jsonify({"window": window, "gateway": gateway, "total": _counts(traffic.totals(since, gateway)),
                    "entries": [u.as_json() for u in traffic.top_entries(since, gateway)],
                    "destinations": [dict(element=r[0], **_counts(r[1:]))
                                     for r in traffic.top_destinations(since, gateway)]})


@bp.get("/traffic/series")
@requires("read")
def traffic_series():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        return error(400, "invalid_format", "format %r must be json or csv" % fmt)
    try:
        result, filters = traffic.series_for(request.args)
    except traffic.TrafficError as exc:
        return error(exc.status, exc.code, str(exc))
    if fmt == "csv":
        return Response(traffic.series_csv(result), mimetype="text/csv", headers={
            "Content-Disposition": "attachment; filename=traffic-%s.csv" % result.window})
    return jsonify(dict(filters, bucket_seconds=result.bucket, start=result.start.isoformat() + "Z",
                        end=result.end.isoformat() + "Z",
                        units={"time": "UTC", "rates": "bytes/s and packets/s (each point's sum / bucket_seconds)",
                               "counts": "bytes and packets in the bucket"},
                        points=list(result.rows())))


@bp.get("/traffic/clients")
@requires("read")
def traffic_clients():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        return error(400, "invalid_format", "format %r must be json or csv" % fmt)
    window, since, gateway = _traffic_args()
    try:
        limit = traffic.client_limit(request.args.get("limit"))
    except traffic.TrafficError as exc:
        return error(exc.status, exc.code, str(exc))
    rows = traffic.top_clients(since, gateway, limit)
    span = traffic.WINDOWS[window]
    if fmt == "csv":
        return Response(traffic.top_clients_csv(rows, span), mimetype="text/csv", headers={
            "Content-Disposition": "attachment; filename=traffic-clients-%s.csv" % window})
    return jsonify({"window": window, "gateway": gateway, "limit": limit,
                    "units": {"counts": "bytes and packets in the window",
                              "bytes_per_second": "out_bytes + in_bytes over the window's seconds"},
                    "clients": [dict(client=r[0], **_counts(r[1:]),
                                     bytes_per_second=round((r[1] + r[2]) / span.total_seconds(), 3))
                                for r in rows]})


@bp.get("/entries/<id:entry_id>/traffic")
@requires("read")
def entry_traffic(entry_id):
    window, since, gateway = _traffic_args()
    use = traffic.entry_use(entry_id, since, gateway)
    if use.entry is None and use.name is None:
        return error(404, "not_found", "entry %d does not exist and carried no traffic in the last %s"
                     % (entry_id, window))
    return jsonify(dict(use.as_json(), window=window, gateway=gateway,
                        shared_with=traffic.shared_with(entry_id) if use.entry else {},
                        series=[{"minute": m.isoformat() + "Z", "out_bytes": int(o or 0), "in_bytes": int(i or 0)}
                                for m, o, i in traffic.entry_series(entry_id, since, gateway)]))


@bp.get("/gateways")
@requires("read")
def list_gateways():
    return jsonify(fleet.view(lambda value: value.isoformat() + "Z" if value else None))


def _iso(value):
    return value.isoformat() + "Z" if value else None


@bp.get("/blocked")
@requires("read")
def list_blocked():
    page, per_page = _page_args()
    observed = request.args.get("observed")
    if observed not in (None, "true", "false"):
        return error(400, "invalid_observed", "observed %r must be true (only what observe mode let through) or "
                     "false (only what was refused)" % observed)
    sort = request.args.get("sort", "newest")
    if sort not in blocked.SORTS:
        return error(400, "invalid_sort", "sort %r must be one of %s" % (sort, ", ".join(blocked.SORTS)))
    rows, total = blocked.query(request.args.get("client"), request.args.get("gateway"),
                                request.args.get("destination"), None if observed is None else observed == "true",
                                sort, page, per_page, request.args.get("name"))
    names = blocked.names_of(rows)
    return jsonify({"items": [blocked.to_json(r, _iso, names.get((r.gateway, r.destination), ())) for r in rows],
                    "total": total, "page": page, "per_page": per_page, "sort": sort})


@bp.post("/blocked/<id:attempt_id>/allow")
@requires("write")
def allow_blocked(attempt_id):
    body = _json_body()
    if not isinstance(body, dict) or set(body) - {"duration", "name"}:
        return error(400, "invalid_body", "the body must be {\"duration\": \"permanent|1h|1d|1w\"}, and \"name\" "
                     "to allow one of the row's names instead of its destination")
    entry, revision, _row = blocked.allow(attempt_id, body.get("duration", "permanent"), current_app.config["OG"],
                                          g.token.name, name=body.get("name"))
    return _created(entry, revision)


@bp.put("/gateways/<name>/mode")
@requires("admin")
def set_gateway_mode(name):
    body = _json_body()
    if not isinstance(body, dict) or set(body) != {"mode"}:
        return error(400, "invalid_body", "the body must be {\"mode\": \"enforce\"} or {\"mode\": \"observe\"}")
    gw, before = gateways.set_mode(name, body["mode"])
    return jsonify({"name": gw.name, "mode": gw.mode, "before": before or None, "running_mode": gw.running_mode
                    or None})


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(document(__version__))
