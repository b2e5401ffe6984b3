"""The operators' UI: server-rendered pages (Jinja, autoescaped), a session login, CSRF on every form.

Light on JavaScript: one small script refreshes the fleet table; everything else is plain HTML forms, so every
refusal is a page with the reason in words. The Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import wraps
from urllib.parse import urlencode, urlsplit

from flask import (Blueprint, abort, current_app, flash, g, jsonify, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface

from ..errors import error as json_error, wants_html
from ..extensions import db
from ..models import Entry, User, utcnow
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
                return render_template("ui/error.html", title="Not allowed", message=(
                    "Your account %s has the role %s, which may not %s. Ask an admin for the editor or admin role."
                    % (g.user.username, g.user.role, ACTIONS[action]))), 403
            return view(*args, **kwargs)
        return wrapped
    return decorator


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
                           now=utcnow())


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
        return render_template("ui/error.html", title="Cannot delete", message=undeletable_reason(entry)), 403
    described = entries.describe(entry)
    revision = entries.delete(entry_id)
    flash("Deleted entry %d (%s)%s." % (entry_id, described, " at revision %d" % revision if revision else ""),
          "success")
    return redirect(url_for("ui.entries_page"))


def traffic_chart(series, since, span, width=720, height=180):
    """An inline SVG of out/in bytes per bucket (1 min for an hour, 10 min for a day); no JavaScript."""
    bucket = 60 if span <= dt.timedelta(hours=1) else 600
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
@bp.get("/traffic")
@page("read")
def traffic_page():
    window = request.args.get("window", "1h")
    if window not in traffic.WINDOWS:
        window = "1h"
    gateway = request.args.get("gateway") or None
    since = traffic.window(window)
    return render_template("ui/traffic.html", window=window, gateway=gateway,
                           gateways=traffic.gateways_with_traffic(traffic.window("24h")),
                           destinations=traffic.top_destinations(since, gateway),
                           top_entries=traffic.top_entries(since, gateway), totals=traffic.totals(since, gateway))


@bp.get("/addresses")
@page("read")
def why_page():
    address = (request.args.get("address") or request.args.get("q") or "").strip()
    result = error = None
    if address:
        try:
            result = fleet.why(address, current_app.config["OG"])
        except entries.EntryError as exc:
            error = exc.message
    return render_template("ui/why.html", address=address, result=result, error=error)


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
BLOCKED_FILTERS = ("client", "gateway", "destination")
BLOCKED_PER_PAGE = 50


@bp.get("/blocked")
@page("read")
def blocked_page(error=None, status=200):
    args = {k: (request.args.get(k) or "").strip() or None for k in BLOCKED_FILTERS}
    sort = request.args.get("sort") if request.args.get("sort") in blocked.SORTS else "newest"
    problem = None
    try:
        refused, refused_total = blocked.query(args["client"], args["gateway"], args["destination"], False, sort,
                                               1, BLOCKED_PER_PAGE)
        observed, observed_total = blocked.query(args["client"], args["gateway"], args["destination"], True,
                                                 sort, 1, BLOCKED_PER_PAGE)
    except blocked.BlockedError as exc:
        problem = exc.message + "; showing every attempt"
        args = dict.fromkeys(BLOCKED_FILTERS)
        refused, refused_total = blocked.query(observed=False, sort=sort, per_page=BLOCKED_PER_PAGE)
        observed, observed_total = blocked.query(observed=True, sort=sort, per_page=BLOCKED_PER_PAGE)
    cfg = current_app.config["OG"]
    return render_template("ui/blocked.html", refused=refused, refused_total=refused_total, observed=observed,
                           observed_total=observed_total, args=args, sort=sort, problem=problem, error=error,
                           durations=list(blocked.DURATIONS), spec=blocked.entry_spec,
                           link=url_for("ui.blocked_page") + "?" + ("sort=busiest&" if sort == "busiest" else ""),
                           retention=(cfg["blocked_retention_days"], cfg["blocked_max_rows"])), status


DURATION_LABELS = {"permanent": "permanently", "1h": "for 1 hour", "1d": "for 1 day", "1w": "for 1 week"}


@bp.post("/blocked/<id:attempt_id>/allow")
@page("write")
def allow_blocked(attempt_id):
    duration = request.form.get("duration", "permanent")
    try:
        entry, revision, row = blocked.allow(attempt_id, duration, current_app.config["OG"], g.user.username)
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
    args = {k: request.args.get(k) or None for k in ("actor", "action", "object_type", "object_id", "q")}
    try:
        pg = max(1, min(int(request.args.get("page", 1)), 10 ** 9))
    except ValueError:
        pg = 1
    rows, total = audit.query(page=pg, per_page=PER_PAGE, **args)
    return render_template("ui/audit.html", rows=rows, total=total, page=pg,
                           pages=max(1, math.ceil(total / PER_PAGE)), args=args)


# ---- users and tokens (admins) ------------------------------------------------------------------------------
@bp.get("/admin/users")
@page("admin")
def users_page(error=None, form=None, status=200):
    return render_template("ui/users.html", users=users.all_users(), error=error, form=form or {},
                           roles=users.ROLES), status


@bp.post("/admin/users")
@page("admin")
def create_user():
    form = request.form.to_dict()
    try:
        user = users.create(form.get("username", "").strip(), form.get("password", ""), form.get("role", ""))
    except users.UserError as exc:
        form.pop("password", None)
        return users_page(error=exc.message, form=form, status=exc.status)
    flash("Created the %s user %s." % (user.role, user.username), "success")
    return redirect(url_for("ui.users_page"))


@bp.post("/admin/users/<id:user_id>/<any(disable, enable):action>")
@page("admin")
def toggle_user(user_id, action):
    if user_id == g.user.id and action == "disable":
        return render_template("ui/error.html", title="Not allowed",
                               message="You cannot disable your own account %s." % g.user.username), 400
    try:
        user = users.set_disabled(user_id, action == "disable")
    except users.UserError as exc:
        abort(exc.status, exc.message)
    flash("%s user %s." % ("Disabled" if user.disabled else "Enabled", user.username), "success")
    return redirect(url_for("ui.users_page"))


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
