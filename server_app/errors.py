"""One error shape for the whole server, the request errors, and the app-wide handlers that render them.

The API and every other machine path answer {"error": {"code", "message"}}; the UI's pages answer an HTML
page with the same message. A RequestError raised anywhere (a view, a service) reaches one handler.
"""

from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from .extensions import db

log = logging.getLogger(__name__)

# Paths that machines call: errors there are JSON, everywhere else an HTML page.
MACHINE_PATHS = ("/api/", "/ws/", "/metrics", "/healthz", "/readyz")


class RequestError(Exception):
    """A refused request: HTTP status, a stable code and a message naming the value and the fix."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BodyError(RequestError):
    """The request body is not JSON, not CSV with a header, or not of the shape the endpoint takes."""


class PageError(RequestError):
    """The page or per_page query parameter is not a whole number within its range."""


class TimeError(RequestError):
    """A time query parameter (since, until) is not an ISO 8601 time."""


class QueryError(RequestError):
    """Any other query parameter is unknown or out of its range (kind, format, window)."""


def wants_html():
    """True for the UI's paths, which answer errors as pages."""
    return not request.path.startswith(MACHINE_PATHS)


def error(status, code, message):
    """The JSON error response: {"error": {"code": code, "message": message}} with `status`."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _page(status, title, message):
    return render_template("ui/error.html", title=title, message=message), status


def _copy_headers(exc, response):
    # Keep the exception's own headers (Allow on 405, WWW-Authenticate, Retry-After ...).
    for key, value in exc.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value
    return response


def install(app):
    """Register the handlers that turn every error into the one shape (JSON, or a page on the UI's paths)."""

    @app.errorhandler(RequestError)
    def request_error(exc):
        if wants_html():
            return _page(exc.status, "Refused", exc.message)
        return error(exc.status, exc.code, exc.message)

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        message = ("This form was refused: %s. It did not come from a page of this server (or the page is too "
                   "old); reload the page and submit it again." % exc.description.rstrip("."))
        if not wants_html():
            return error(400, "csrf", message)
        return _page(400, "Form refused", message)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if wants_html():
            return _copy_headers(exc, app.make_response(_page(exc.code, exc.name, exc.description)))
        return _copy_headers(exc, error(exc.code, exc.name.lower().replace(" ", "_"), exc.description))

    @app.errorhandler(OperationalError)
    def database_unavailable(exc):
        db.session.rollback()
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        response = error(503, "database_unavailable", "the database is not reachable; nothing was changed, retry "
                         "in a few seconds")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def server_error(exc):
        log.exception("unhandled error")
        return error(500, "internal_error", "the server failed to handle this request; see its log")
