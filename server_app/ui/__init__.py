"""The operators' UI: server-rendered pages (Jinja, autoescaped), a session login, CSRF on every form.

Light on JavaScript: one small script refreshes the fleet table; everything else is plain HTML forms, so every
refusal is a page with the reason in words. The Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from functools import wraps
from urllib.parse import urlencode, urlsplit

from flask import (Blueprint, abort, current_app, flash, g, jsonify, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface

from ..errors import RequestError, error as json_error, wants_html
from ..extensions import db
from ..models import Entry, Token, User, utcnow
from ..services import audit, blocked, changelog, entries, fleet, gateways, tokens, traffic, users

bp = Blueprint("ui", __name__, template_folder="../templates", static_folder="../static",
               static_url_path="/static")
ACTIONS = {"read": "read", "write": "change entries", "admin": "administer users and tokens"}


# ---- session ----------------------------------------------------------------------------------------------
def _session_version(user):
    return user.password_hash[-16:]


@bp.before_app_request
def load_user():
    g.user = None
    uid = session.get("uid")
    if uid is None:
        return
    user = db.session.get(User, uid)
    if user is None or user.disabled or session.get("pwv") != _session_version(user):
        session.clear()
        return
    g.user = user


def may(action):
    return tokens.allowed(g.get("user"), action)     # users have the tokens' roles


def page(action="read"):
    """Require a logged-in user whose role grants `action`; otherwise the login page or a 403 page."""
    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if g.user is None:
                return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
            if not may(action):
                message = ("Your account %s has the role %s, which may not %s. Ask an admin for the editor or admin "
                           "role." % (g.user.username, g.user.role, ACTIONS[action]))
                audit.refused(message)
                return render_template("ui/error.html", title="Not allowed", message=message), 403
            return view(*args, **kwargs)
        return wrapped
    return decorator


@bp.errorhandler(RequestError)
def refused(exc):
    """A refusal raised by a service in a UI view: audited when it refused a change, then shown as a page."""
    if request.method not in ("GET", "HEAD") and g.get("user") is not None:
        audit.refused(exc.message)
    return render_template("ui/error.html", title="Refused", message=exc.message), exc.status


@bp.app_context_processor
def helpers():
    return {"may": may, "current_user": g.get("user"), "page_url": page_url}


def page_url(**changes):
    args = request.args.to_dict()
    args.update(changes)
    return request.path + "?" + urlencode({k: v for k, v in args.items() if v not in (None, "")})


@bp.app_template_filter("when")
def when(value):
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@bp.app_template_filter("iso_when")
def iso_when(value):
    """An ISO 8601 time as the API gives it (2026-12-03T10:00:00Z) in the UI's one format."""
    if not value:
        return ""
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when(parsed)


ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?$")


@bp.app_template_filter("detail")
def detail(value):
    """A value of an audit event's before or after as text: times in the UI's one format, lists space-separated."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return iso_when(value) if ISO_TIME.match(value) else value
    if isinstance(value, list):
        return ("; " if any(isinstance(v, dict) for v in value) else " ").join(detail(v) for v in value) \
            if value else "none"
    if isinstance(value, dict):      # an address of an entry: its fields that have a value
        return ", ".join("%s %s" % (k, detail(v)) for k, v in sorted(value.items()) if v not in (None, "", []))
    return str(value)


@bp.app_template_filter("bytes")
def human_bytes(n):
    n = int(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


@bp.after_app_request
def security_headers(response):
    if wants_html():
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; script-src 'self'; "
                                    "style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                    "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if g.get("user") is not None:
            response.headers.setdefault("Cache-Control", "no-store")
    return response


# ---- login ------------------------------------------------------------------------------------------------
def _safe_next(target):
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("ui.entries_page")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("ui.entries_page"))
        return render_template("ui/login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()
    try:
        user = users.login(username, request.form.get("password", ""), request.remote_addr or "",
                           current_app.config["OG"], current_app.extensions["og_login_throttle"])
    except users.LoginRefused as exc:
        return render_template("ui/login.html", error=exc.message, username=username,
                               next=request.form.get("next", "")), exc.status
    session.clear()
    session.permanent = True
    session["uid"], session["pwv"] = user.id, _session_version(user)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    if g.user is not None:
        audit.record("user.logout", "user", g.user.id, "%s logged out" % g.user.username)
        db.session.commit()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("ui.login"))


@bp.get("/favicon.ico")
def favicon():
    return redirect(url_for("ui.static", filename="favicon.svg"), 301)


@bp.get("/")
def index():
    return redirect(url_for("ui.entries_page"))


# ---- entries ----------------------------------------------------------------------------------------------
FILTERS = ("q", "kind", "creator", "deletable", "expiring")
PER_PAGE = 50


def _entries_list(form=None, error=None, status=200):
    args = {k: request.args.get(k) or None for k in FILTERS}
    try:
        pg = max(1, min(int(request.args.get("page", 1)), 10 ** 9))
    except ValueError:
        pg = 1
    problem = None
    if args["kind"] not in (None, "ip", "cidr", "domain"):
        problem, args["kind"] = "kind %r must be ip, cidr or domain; showing every kind" % args["kind"], None
    try:
        rows, total = entries.query(args["q"], args["kind"], pg, PER_PAGE, creator=args["creator"],
                                    deletable=args["deletable"], expiring=args["expiring"])
    except entries.EntryError as exc:
        problem = exc.message + "; showing every entry"
        args.update(deletable=None, expiring=None)
        rows, total = entries.query(args["q"], args["kind"], pg, PER_PAGE, creator=args["creator"])
    pages = max(1, math.ceil(total / PER_PAGE))
    return render_template("ui/entries.html", rows=rows, total=total, page=pg, pages=pages, args=args,
                           problem=problem, form=form or {"deletable": "on"}, error=error,
                           revision=changelog.head_revision()), status


@bp.get("/entries")
@page("read")
def entries_page():
    return _entries_list()


def _form_entry(form):
    data = {"target": form.get("target", "").strip()}
    ports = form.get("ports", "").replace(",", " ").split()
    if ports:
        data["ports"] = ports
    data["deletable"] = form.get("deletable") == "on"
    if form.get("expires_at", "").strip():
        value = form["expires_at"].strip()
        # <input type=datetime-local> gives 2026-11-23T10:00 without a zone: the UI says it is UTC.
        data["expires_at"] = value if value.endswith("Z") or "+" in value[10:] else value + "Z"
    if form.get("comment", "").strip():
        data["comment"] = form["comment"].strip()
    return data


@bp.post("/entries")
@page("write")
def create_entry():
    form = request.form.to_dict()
    try:
        entry, revision = entries.create(_form_entry(form), current_app.config["OG"], g.user.username)
    except entries.EntryError as exc:
        audit.refused(exc.message)
        return _entries_list(form=form, error=exc.message, status=exc.status)
    flash("Added %s as entry %d%s." % (entries.describe(entry), entry.id,
                                       " (revision %d)" % revision if revision else ""), "success")
    return redirect(url_for("ui.entry_page", entry_id=entry.id))


def _entry_or_404(entry_id):
    entry = db.session.get(Entry, entry_id)
    if entry is None:
        abort(404, "entry %d does not exist (it may have been deleted or expired)" % entry_id)
    return entry


def undeletable_reason(entry):
    return ("entry %d (%s) was created as undeletable by %s on %s: it can only leave through its expiry%s."
            % (entry.id, entry.target, entry.created_by or "?", when(entry.created_at),
               " (" + when(entry.expires_at) + ")" if entry.expires_at else ", and it has none"))


@bp.get("/entries/<id:entry_id>")
@page("read")
def entry_page(entry_id):
    return _entry_view(entry_id)


def _expiry_field(value):
    """A time as <input type=datetime-local> shows it (UTC, to the minute); '' for none."""
    return value.strftime("%Y-%m-%dT%H:%M") if value else ""


def edit_form(entry):
    """The edit form's values for an entry as it is."""
    return {"ports": " ".join(entry.ports or []), "expires_at": _expiry_field(entry.expires_at),
            "comment": entry.comment or "",
            "grace_seconds": "" if entry.grace_seconds is None else str(entry.grace_seconds),
            "etag": entries.etag(entry)}


def _form_patch(form, entry):
    """The merge patch of the edit form: ports and comment as typed (empty: every port, no comment); the expiry
    only when it differs from what the form showed (it shows minutes); grace for domains; undeletable (admin)."""
    patch = {"ports": form.get("ports", "").replace(",", " ").split(), "comment": form.get("comment", "").strip()}
    expires = form.get("expires_at", "").strip()
    if expires != _expiry_field(entry.expires_at):
        # <input type=datetime-local> gives 2026-11-23T10:00 without a zone: the UI says it is UTC.
        patch["expires_at"] = (expires if expires.endswith("Z") or "+" in expires[10:] else expires + "Z") \
            if expires else None
    if entry.kind == "domain" and "grace_seconds" in form:
        text = form["grace_seconds"].strip()
        if not text:
            patch["grace_seconds"] = None
        elif text.isdigit():
            patch["grace_seconds"] = int(text)
        else:
            raise entries.EntryError(400, "invalid_grace_seconds", "grace %r must be a whole number of seconds "
                                     "within 0-604800, or empty for the server's default" % text)
    if form.get("undeletable") == "on":
        patch["deletable"] = False
    return patch


@bp.post("/entries/<id:entry_id>/edit")
@page("write")
def edit_entry(entry_id):
    entry = _entry_or_404(entry_id)
    form = request.form.to_dict()
    etag = form.get("etag") or None
    try:
        entry, revision = entries.update(entry_id, _form_patch(form, entry), current_app.config["OG"],
                                         if_match=(lambda current: current == etag) if etag else None,
                                         admin=may("admin"))
    except entries.EntryError as exc:
        message = exc.message
        if exc.status == 412:
            message = ("Someone changed this entry since you opened the form; what it is now is shown above. "
                       "Your values are kept below: check them and save again.")
            form["etag"] = entries.etag(_entry_or_404(entry_id))
        return _entry_view(entry_id, form=form, error=message, status=exc.status)
    flash("Saved entry %d (%s)%s." % (entry.id, entries.describe(entry), " at revision %d" % revision if revision
                                      else "; what the gateways enforce did not change"), "success")
    return redirect(url_for("ui.entry_page", entry_id=entry.id))


def _entry_view(entry_id, form=None, error=None, status=200):
    entry = _entry_or_404(entry_id)
    window = request.args.get("window", "1h")
    if window not in traffic.WINDOWS:
        window = "1h"
    since = traffic.window(window)
    series = traffic.entry_series(entry.id, since)
    chart = traffic_chart(series, since, traffic.WINDOWS[window])
    return render_template("ui/entry.html", entry=entry, chart=chart, window=window,
                           use=traffic.entry_use(entry.id, since), shared_with=traffic.shared_with(entry.id),
                           reason=None if entry.deletable else undeletable_reason(entry),
                           gaps=fleet.not_enforced([a.address for a in entry.addresses if not a.refused]),
                           now=utcnow(), form=form or edit_form(entry), error=error), status


@bp.get("/entries/<id:entry_id>/delete")
@page("write")
def confirm_delete(entry_id):
    entry = _entry_or_404(entry_id)
    return render_template("ui/delete.html", entry=entry,
                           reason=None if entry.deletable else undeletable_reason(entry))


@bp.post("/entries/<id:entry_id>/delete")
@page("write")
def delete_entry(entry_id):
    entry = _entry_or_404(entry_id)
    if not entry.deletable:
        audit.refused(undeletable_reason(entry), before=entries.to_json(entry), asked={})
        return render_template("ui/error.html", title="Cannot delete", message=undeletable_reason(entry)), 403
    described = entries.describe(entry)
    revision = entries.delete(entry_id)
    flash("Deleted entry %d (%s)%s." % (entry_id, described, " at revision %d" % revision if revision else ""),
          "success")
    return redirect(url_for("ui.entries_page"))


def traffic_chart(series, since, span, width=720, height=180):
    """An inline SVG of out/in bytes per bucket (1 min for an hour, 10 min for a day, 1 h for a week); no
    JavaScript."""
    bucket = 60 if span <= dt.timedelta(hours=1) else 600 if span <= dt.timedelta(days=1) else 3600
    # Buckets from the one holding `since` up to and including the current one.
    start = dt.datetime.fromtimestamp(since.replace(tzinfo=dt.timezone.utc).timestamp() // bucket * bucket,
                                      dt.timezone.utc).replace(tzinfo=None)
    n = int(span.total_seconds() // bucket) + 1
    out, inn = [0] * n, [0] * n
    for minute, o, i in series:
        k = int((minute - start).total_seconds() // bucket)
        if 0 <= k < n:
            out[k] += o or 0
            inn[k] += i or 0
    peak = max(out + inn + [1])
    pad, w, h = 40, width - 50, height - 30

    def points(values):
        return " ".join("%.1f,%.1f" % (pad + w * k / max(1, n - 1), 10 + h - h * v / peak)
                        for k, v in enumerate(values))
    return {"width": width, "height": height, "out": points(out), "in": points(inn), "peak": peak,
            "x0": pad, "x1": pad + w, "y0": 10, "y1": 10 + h, "bucket": bucket,
            "start": start, "end": start + dt.timedelta(seconds=n * bucket)}


# ---- traffic ----------------------------------------------------------------------------------------------
TICKS = {"wide": {"1h": dt.timedelta(minutes=10), "24h": dt.timedelta(hours=4), "7d": dt.timedelta(days=1)},
         "compact": {"1h": dt.timedelta(minutes=20), "24h": dt.timedelta(hours=8), "7d": dt.timedelta(days=2)}}
SIZES = {"wide": (900, 220, 30), "compact": (420, 244, 36)}   # width, height, bottom margin (the time labels)


def axis_top(peak):
    """A round top for a rate axis in the unit it is shown in (1, 2 or 5 times a power of ten of B, KiB, MiB
    or GiB per second), at least `peak` and 1 B/s."""
    peak = max(peak, 1)
    unit = 1024 ** min(3, max(0, int(math.log(max(peak, 1), 1024))))
    value = peak / unit
    scale = 10 ** math.floor(math.log10(value)) if value >= 1 else 1
    nice = next(m * scale for m in (1, 2, 5, 10) if m * scale >= value)
    if nice > 1000 and unit < 1024 ** 3:      # 2000 B/s reads as 1.9 KiB/s: 1 of the next unit instead
        return unit * 1024
    return nice * unit


def rate_label(value):
    """A rate for an axis: '0.25 B/s', '250 B/s', '12.5 KiB/s'."""
    return ("%g B/s" % round(value, 2)) if value < 1024 else human_bytes(value) + "/s"


def rate_chart(result, size="wide"):
    """An inline SVG of a Series' out/in rates (bytes/s), a UTC time axis ending at now; no JavaScript. Two
    sizes: wide (the page) and compact (a phone; the stylesheet shows one of them)."""
    width, height, bottom = SIZES[size]
    pad_left, pad_right, top = 70, 12, 10
    w, h = width - pad_left - pad_right, height - top - bottom
    span = (result.end - result.start).total_seconds() or 1
    top_value = axis_top(result.peak_bytes_per_second or 1)

    def x(at):
        return pad_left + w * min(1.0, (at - result.start).total_seconds() / span)

    def y(value):
        return top + h - h * value / top_value

    def points(index):
        # Each bucket's rate at its middle (the current bucket, partial, ends at now).
        half = dt.timedelta(seconds=result.bucket / 2)
        return " ".join("%.1f,%.1f" % (x(min(p[0] + half, result.end)), y(p[index] / result.bucket))
                        for p in result.points)
    step = TICKS[size][result.window]
    fmt = "%a %d" if result.window == "7d" else "%H:%M"
    epoch = dt.datetime(1970, 1, 1)
    first = epoch + dt.timedelta(seconds=math.ceil((result.start - epoch).total_seconds() / step.total_seconds())
                                 * step.total_seconds())
    xticks = []
    while first <= result.end:
        xticks.append({"x": x(first), "label": first.strftime(fmt)})
        first += step
    yticks = [{"y": y(top_value * k / 4), "label": rate_label(top_value * k / 4)} for k in range(5)]
    return {"size": size, "width": width, "height": height, "x0": pad_left, "x1": pad_left + w, "y0": top,
            "y1": top + h, "label_y": top + h + 14, "out": points(1), "in": points(2), "xticks": xticks, "yticks": yticks,
            "bucket": result.bucket, "start": result.start, "end": result.end}


def _traffic_query():
    """The traffic page's query, unknown windows and bad filters dropped (the page says so)."""
    args = {k: v for k, v in request.args.items() if k in ("window", "gateway", "destination", "entry", "client")
            and v}
    if args.get("window") not in traffic.WINDOWS:
        args["window"] = "1h"
    return args


@bp.get("/traffic")
@page("read")
def traffic_page():
    args = _traffic_query()
    window, gateway = args["window"], args.get("gateway")
    problem = None
    try:
        result, filters = traffic.series_for(args)
    except traffic.TrafficError as exc:
        problem = str(exc)
        args = {k: v for k, v in args.items() if k in ("window", "gateway")}
        result, filters = traffic.series_for(args)
    since = traffic.window(window)
    return render_template("ui/traffic.html", window=window, gateway=gateway, filters=filters, problem=problem,
                           charts=[rate_chart(result), rate_chart(result, "compact")], series=result,
                           csv_args=args,
                           gateways=traffic.gateways_with_traffic(traffic.window("7d")),
                           destinations=traffic.top_destinations(since, gateway),
                           top_clients=_top_clients(since, gateway, traffic.WINDOWS[window]),
                           top_entries=traffic.top_entries(since, gateway), totals=traffic.totals(since, gateway))


def _top_clients(since, gateway, span):
    """The top clients of a window as the page shows them: counts and the window's average rate, labelled."""
    return [{"client": c, "out_bytes": ob, "in_bytes": ib, "packets": op + ip,
             "rate": rate_label((ob + ib) / span.total_seconds())}
            for c, ob, ib, op, ip in traffic.top_clients(since, gateway)]


@bp.get("/traffic/clients.csv")
@page("read")
def traffic_clients_csv():
    window = request.args.get("window", "1h")
    try:
        since = traffic.window(window)
    except traffic.TrafficError as exc:
        return render_template("ui/error.html", title="Cannot export", message=str(exc)), exc.status
    rows = traffic.top_clients(since, request.args.get("gateway") or None, traffic.MAX_TOP_CLIENTS)
    return current_app.response_class(traffic.top_clients_csv(rows, traffic.WINDOWS[window]), mimetype="text/csv",
                                      headers={"Content-Disposition": "attachment; filename=traffic-clients-%s.csv"
                                               % window})


@bp.get("/traffic.csv")
@page("read")
def traffic_csv():
    try:
        result, _filters = traffic.series_for(request.args)
    except traffic.TrafficError as exc:
        return render_template("ui/error.html", title="Cannot export", message=str(exc)), exc.status
    return current_app.response_class(traffic.series_csv(result), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=traffic-%s.csv" % result.window})


PORT_QUERY = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s]+)):(?P<port>\d{1,5})(?:/(?P<proto>tcp|udp))?$")


def split_query(text):
    """'198.51.100.10:443', '[2001:db8::1]:443/tcp', 'api.example.com:443' -> (address, port, protocol); a bare
    address or name (an IPv6 address without brackets too) -> (text, None, None)."""
    match = PORT_QUERY.match(text)
    if not match:
        return text, None, None
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise entries.EntryError(400, "invalid_port", "port %d in %r must lie within 1-65535" % (port, text))
    return match.group("v6") or match.group("host"), port, match.group("proto")


def covers_port(ports, port, proto):
    """Whether an entry's ports ('443/tcp', '8000-8100/udp', none for all) let `port` (of `proto`, if given) out."""
    if not ports or port is None:
        return True
    for spec in ports:
        numbers, dummy, spec_proto = str(spec).partition("/")
        low, dummy, high = numbers.partition("-")
        try:
            inside = int(low) <= port <= int(high or low)
        except ValueError:
            continue
        if inside and (proto is None or not spec_proto or spec_proto == proto):
            return True
    return False


@bp.get("/addresses")
@page("read")
def why_page():
    query = (request.args.get("address") or request.args.get("q") or "").strip()
    result = error = port = proto = None
    if query:
        try:
            address, port, proto = split_query(query)
            result = fleet.why(address, current_app.config["OG"])
        except entries.EntryError as exc:
            error = exc.message
    if result is not None:
        for item in result["entries"]:
            item["covers_port"] = covers_port(item.get("ports"), port, proto)
        result["allowed_here"] = any(i["covers_port"] and i.get("published", True) for i in result["entries"])
    return render_template("ui/why.html", address=query, result=result, error=error, port=port, proto=proto)


# ---- fleet ------------------------------------------------------------------------------------------------
@bp.get("/gateways")
@page("read")
def gateways_page():
    return render_template("ui/gateways.html", fleet=fleet.view(when))


@bp.get("/gateways.json")
def gateways_json():
    if g.user is None:
        return json_error(401, "unauthorized", "log in again")
    return jsonify(fleet.view(when))


@bp.post("/gateways/<name>/mode")
@page("admin")
def set_gateway_mode(name):
    mode = request.form.get("mode", "")
    try:
        _gw, before = gateways.set_mode(name, mode)
    except gateways.ModeError as exc:
        return render_template("ui/error.html", title="Refused", message=exc.message), exc.status
    flash("Gateway %s set to %s (was %s); its agent follows within a second." % (name, mode, before or "unset"),
          "success")
    return redirect(url_for("ui.gateways_page"))


# ---- blocked attempts ---------------------------------------------------------------------------------------
BLOCKED_FILTERS = ("client", "gateway", "destination", "name")
BLOCKED_PER_PAGE = 50


@bp.get("/blocked")
@page("read")
def blocked_page(error=None, status=200):
    args = {k: (request.args.get(k) or "").strip() or None for k in BLOCKED_FILTERS}
    sort = request.args.get("sort") if request.args.get("sort") in blocked.SORTS else "newest"
    problem = None
    try:
        named = blocked.name_filter(args["name"]) if args["name"] else None   # once for both lists
        refused, refused_total = blocked.query(args["client"], args["gateway"], args["destination"], False, sort,
                                               1, BLOCKED_PER_PAGE, args["name"], named)
        observed, observed_total = blocked.query(args["client"], args["gateway"], args["destination"], True,
                                                 sort, 1, BLOCKED_PER_PAGE, args["name"], named)
    except blocked.BlockedError as exc:
        problem = exc.message + "; showing every attempt"
        args = dict.fromkeys(BLOCKED_FILTERS)
        refused, refused_total = blocked.query(observed=False, sort=sort, per_page=BLOCKED_PER_PAGE)
        observed, observed_total = blocked.query(observed=True, sort=sort, per_page=BLOCKED_PER_PAGE)
    cfg = current_app.config["OG"]
    names = blocked.names_of(refused + observed)
    return render_template("ui/blocked.html", refused=refused, refused_total=refused_total, observed=observed,
                           observed_total=observed_total, args=args, sort=sort, problem=problem, error=error,
                           names=names,
                           durations=list(blocked.DURATIONS), spec=blocked.entry_spec,
                           link=url_for("ui.blocked_page") + "?" + ("sort=busiest&" if sort == "busiest" else ""),
                           retention=(cfg["blocked_retention_days"], cfg["blocked_max_rows"])), status


DURATION_LABELS = {"permanent": "permanently", "1h": "for 1 hour", "1d": "for 1 day", "1w": "for 1 week"}


@bp.post("/blocked/<id:attempt_id>/allow")
@page("write")
def allow_blocked(attempt_id):
    duration = request.form.get("duration", "permanent")
    # The row's second button ("Allow name") sends allow=name with the name chosen; the first allows the address.
    name = request.form.get("name", "") if request.form.get("allow") == "name" else None
    try:
        entry, revision, row = blocked.allow(attempt_id, duration, current_app.config["OG"], g.user.username,
                                             name=name)
    except (blocked.BlockedError, entries.EntryError) as exc:
        return blocked_page(error=exc.message, status=exc.status)
    flash("Allowed %s %s as entry %d%s; asked for by %s via %s." % (
        entries.describe(entry), DURATION_LABELS[duration], entry.id,
        " at revision %d" % revision if revision else "", row.client, row.gateway), "success")
    back = request.form.get("back")   # the page the form was on, with its filters (a local path only)
    return redirect(_safe_next(back) if back else url_for("ui.blocked_page"))


# ---- audit ------------------------------------------------------------------------------------------------
@bp.get("/audit")
@page("read")
def audit_page():
    args = {k: request.args.get(k) or None for k in ("actor", "action", "target", "outcome", "object_type",
                                                     "object_id", "q")}
    problem = None
    if args["outcome"] not in (None,) + audit.OUTCOMES:
        problem = "outcome %r must be done or refused; showing both" % args["outcome"]
        args["outcome"] = None
    try:
        pg = max(1, min(int(request.args.get("page", 1)), 10 ** 9))
    except ValueError:
        pg = 1
    rows, total = audit.query(page=pg, per_page=PER_PAGE, **args)
    return render_template("ui/audit.html", rows=rows, total=total, page=pg, problem=problem,
                           pages=max(1, math.ceil(total / PER_PAGE)), args=args, changes=audit.changes,
                           known_actions=audit.KNOWN_ACTIONS)


# ---- users and tokens (admins) ------------------------------------------------------------------------------
@bp.get("/admin/users")
@page("admin")
def users_page(error=None, form=None, status=200):
    return render_template("ui/users.html", users=users.all_users(), error=error, form=form or {},
                           roles=users.ROLES, now=utcnow()), status


@bp.post("/admin/users")
@page("admin")
def create_user():
    form = request.form.to_dict()
    try:
        user = users.create(form.get("username", "").strip(), form.get("password", ""), form.get("role", ""))
    except users.UserError as exc:
        form.pop("password", None)
        audit.refused(exc.message)
        return users_page(error=exc.message, form=form, status=exc.status)
    flash("Created the %s user %s." % (user.role, user.username), "success")
    return redirect(url_for("ui.users_page"))


USER_ACTIONS = {"disable": "Disable", "delete": "Delete"}     # the ones that ask for confirmation first


def _user_page(user, error=None, status=200):
    return render_template("ui/user.html", user=user, error=error, roles=users.ROLES,
                           locked=users.locked(user)), status


@bp.get("/admin/users/<id:user_id>")
@page("admin")
def user_page(user_id):
    try:
        return _user_page(users.get(user_id))
    except users.UserError as exc:
        abort(exc.status, exc.message)


@bp.get("/admin/users/<id:user_id>/<any(disable, delete):action>")
@page("admin")
def confirm_user_action(user_id, action):
    try:
        user = users.get(user_id)
    except users.UserError as exc:
        abort(exc.status, exc.message)
    consequence = {
        "disable": "%s can no longer log in, and every open session of it ends at its next request; an admin can "
                   "enable it again." % user.username,
        "delete": "The account %s and its password are removed for good (its audit events stay); the name can be "
                  "given to a new user later." % user.username}[action]
    return render_template("ui/confirm.html", title="%s user %s?" % (USER_ACTIONS[action], user.username),
                           what="%s user (%s)" % (user.username, user.role), consequence=consequence,
                           action=url_for("ui.user_action", user_id=user.id, action=action),
                           button=USER_ACTIONS[action], cancel=url_for("ui.user_page", user_id=user.id))


@bp.post("/admin/users/<id:user_id>/<any(role, password, unlock, enable, disable, delete):action>")
@page("admin")
def user_action(user_id, action):
    form = request.form
    try:
        if action == "role":
            user = users.set_role(user_id, form.get("role", ""), by=g.user)
            done = "%s has the role %s." % (user.username, user.role)
        elif action == "password":
            if form.get("password", "") != form.get("password2", ""):
                raise users.UserError(400, "password_mismatch", "the two passwords differ; type the same new "
                                      "password twice")
            user = users.set_password(user_id, form.get("password", ""))
            done = "Set a new password for %s; it is unlocked and its other sessions have ended." % user.username
        elif action == "unlock":
            user = users.unlock(user_id)
            done = "Unlocked %s." % user.username
        elif action == "delete":
            gone = users.delete(user_id, by=g.user)
            flash("Deleted the %s user %s." % (gone["role"], gone["username"]), "success")
            return redirect(url_for("ui.users_page"))
        else:
            user = users.set_disabled(user_id, action == "disable", by=g.user)
            done = "%s user %s." % ("Disabled" if user.disabled else "Enabled", user.username)
    except users.UserError as exc:
        target = db.session.get(User, user_id)
        before = users.to_json(target) if target is not None else None
        audit.refused(exc.message, "user." + action, "user", user_id, before=before,
                      asked={k: v for k, v in form.items() if k == "role"} or None,
                      target=before["username"] if before else str(user_id))
        if target is None or exc.code == "not_found":
            abort(exc.status, exc.message)
        return _user_page(db.session.get(User, user_id), error=exc.message, status=exc.status)
    flash(done, "success")
    return redirect(url_for("ui.user_page", user_id=user_id))


@bp.get("/admin/tokens")
@page("admin")
def tokens_page(error=None, form=None, status=200, secret=None):
    return render_template("ui/tokens.html", tokens=tokens.all_tokens(), error=error, form=form or {},
                           roles=tokens.ROLES, secret=secret), status


@bp.post("/admin/tokens")
@page("admin")
def create_token():
    form = request.form.to_dict()
    name, role = form.get("name", "").strip(), form.get("role", "")
    if not name or len(name) > 128:
        return tokens_page(error="the token needs a name of 1-128 characters", form=form, status=400)
    if role not in tokens.ROLES:
        return tokens_page(error="role %r must be one of %s" % (role, ", ".join(tokens.ROLES)), form=form,
                           status=400)
    if tokens.by_name(name) is not None:
        return tokens_page(error="a token named %r exists already" % name, form=form, status=409)
    token, secret = tokens.create(role, name, created_by=g.user.username)
    return tokens_page(secret={"name": token.name, "value": secret})


@bp.get("/admin/tokens/<id:token_id>/revoke")
@page("admin")
def confirm_revoke(token_id):
    token = db.session.get(Token, token_id)
    if token is None:
        abort(404, "token %d does not exist" % token_id)
    if token.revoked:
        abort(409, "the token %s was revoked already on %s" % (token.name, when(token.revoked_at)))
    return render_template("ui/confirm.html", title="Revoke the token %s?" % token.name,
                           what="%s token %s, last used %s" % (token.role, token.name,
                                                               when(token.last_used) or "never"),
                           consequence="Every request with it is refused (401) from now on, on every replica%s; "
                           "this cannot be undone: make a new token instead." % (
                               " and the gateway that uses it is cut off" if token.role == "gateway" else ""),
                           action=url_for("ui.revoke_token", token_id=token.id), button="Revoke",
                           cancel=url_for("ui.tokens_page"))


@bp.post("/admin/tokens/<id:token_id>/revoke")
@page("admin")
def revoke_token(token_id):
    token = tokens.revoke(token_id)
    if token is None:
        abort(404, "token %d does not exist" % token_id)
    flash("Revoked the %s token %s." % (token.role, token.name), "success")
    return redirect(url_for("ui.tokens_page"))


class SessionCookie(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over TLS (directly or through a trusted proxy)."""

    def get_cookie_secure(self, app):
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def install(app):
    """Register the UI and its session settings (CSRF protection itself is bound in create_app)."""
    cfg = app.config["OG"]
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(cfg["session_cookie_secure"]),
                      PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=cfg["session_hours"]),
                      WTF_CSRF_TIME_LIMIT=None, WTF_CSRF_SSL_STRICT=bool(cfg["session_cookie_secure"]))
    app.session_interface = SessionCookie()
    app.extensions["og_login_throttle"] = users.AddressThrottle()
    app.register_blueprint(bp)
