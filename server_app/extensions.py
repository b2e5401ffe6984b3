"""The Flask extensions and the per-app objects of the server, made once here and bound in create_app.

Module-level extensions (flask's init_app pattern) are bound to each app by create_app. The per-app objects
live in app.extensions under these keys (services reach them through the current app):

  og_hub              services/hub.Hub: notices new revisions and wakes the gateway sessions (the publisher)
  og_housekeeper      services/housekeeping.Housekeeper: expires entries, flushes and prunes traffic
  og_resolver         services/resolver.Resolver: resolves domain entries (og_resolver_stats: its counters)
  og_traffic          services/traffic.Traffic: gateway counters waiting to be written
  og_background       background.Background: starts and stops the three threads above
  og_login_throttle   services/users.AddressThrottle: failed logins per remote address
  og_publish_latency, og_snapshots_sent: the Prometheus metrics the gateway sessions update (metrics.py)
"""

from __future__ import annotations

from flask import current_app
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase
from werkzeug.routing import BaseConverter


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
sock = Sock()
csrf = CSRFProtect()


def _at_most(limit):
    """A regular expression for the decimal numbers 0..limit (leading zeros allowed)."""
    digits = str(limit)
    shorter = r"\d{1,%d}" % (len(digits) - 1)
    same_length = ["%s[0-%d]\\d{%d}" % (digits[:i], int(d) - 1, len(digits) - i - 1)
                   for i, d in enumerate(digits) if d != "0"] + [digits]
    return "0*(?:%s|%s)" % (shorter, "|".join(same_length))


class IdConverter(BaseConverter):
    """`<id:...>` in routes: a row id, 0..2**31 - 1 (ids are INTEGER columns: 32-bit in PostgreSQL and MariaDB). A
    larger number matches no route, for every method, and answers 404 instead of the driver's overflow error (a
    500: fuzzing found it). The
    bound is in the expression itself: werkzeug checks a converter's value only for the rule of the request's
    method, so a bound checked in to_python turns a DELETE of a huge id into a 405."""

    regex = _at_most((1 << 31) - 1)
    part_isolating = True

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(int(value))


def hub():
    """The publisher of the current app (None before create_app made it)."""
    return current_app.extensions.get("og_hub")


def resolver():
    """The resolver of the current app (None before create_app made it)."""
    return current_app.extensions.get("og_resolver")
