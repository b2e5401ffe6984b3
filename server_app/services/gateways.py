"""Gateway sessions in the database: which replica holds each one, and whether it still counts as connected.

Replicas share the database (docs/ha.md), so a row's `connected` flag alone can outlive the process that set it
(kill -9, a host lost). A session is shown as connected only while the replica that holds it keeps hearing
from the gateway (`last_seen`, refreshed by its heartbeats), and a replica that starts clears the sessions it
held before it stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid

from sqlalchemy import select, update

from ..errors import RequestError
from ..extensions import db
from ..models import Gateway, utcnow
from . import audit

log = logging.getLogger(__name__)

DEAD_AFTER = 30.0   # seconds without a frame from a gateway: its session is dead (docs/protocol.md)


def connected(gw, now):
    """True while the row's session is alive: marked connected and heard from within DEAD_AFTER of `now`."""
    return bool(gw.connected and gw.last_seen is not None
                and now - gw.last_seen <= dt.timedelta(seconds=DEAD_AFTER))


def open_session(name, address, agent_version, replica, holds="", running_mode=""):
    """Record that `replica` now holds the session of gateway `name` (holds: what its hello said it holds, as
    JSON, "" for an agent that did not say; running_mode: the mode its hello said it runs); return the session's
    id."""
    session = uuid.uuid4().hex
    gw = db.session.query(Gateway).filter_by(name=name).one_or_none() or Gateway(name=name)
    gw.address = address
    gw.agent_version = agent_version
    gw.holds = holds
    gw.running_mode = running_mode or ""
    gw.connected = True
    gw.connected_at = gw.last_seen = utcnow()
    gw.session_replica = replica
    gw.session_id = session
    db.session.add(gw)
    db.session.commit()
    return session


def close_session(name, session):
    """Mark the gateway disconnected, unless a newer session (on any replica) has taken its place."""
    db.session.execute(update(Gateway).where(Gateway.name == name, Gateway.session_id == session)
                       .values(connected=False, last_seen=utcnow()))
    db.session.commit()


def release_replica(replica):
    """At start-up: the sessions `replica` held before it stopped are gone with that process. Returns how many."""
    done = db.session.execute(update(Gateway).where(Gateway.session_replica == replica, Gateway.connected.is_(True))
                              .values(connected=False))
    db.session.commit()
    if done.rowcount:
        log.info("replica %s: %d gateway session(s) of its previous run marked disconnected", replica, done.rowcount)
    return done.rowcount


MODES = ("enforce", "observe")


class ModeError(RequestError):
    """A refused mode change: status, code and a message naming the value and the fix."""


def set_mode(name, mode):
    """Set gateway `name`'s mode (enforce or observe) for its agent to follow, audited; returns (gateway, before).

    A gateway the server has not met yet is refused: its name would be a guess (404)."""
    if mode not in MODES:
        raise ModeError(400, "invalid_mode", "mode %r must be enforce (refuse what is not allowed) or observe "
                        "(forward it and record it as would-have-been-refused)" % (mode,))
    gw = db.session.query(Gateway).filter_by(name=name).one_or_none()
    if gw is None:
        raise ModeError(404, "not_found", "gateway %r is not known to this server: it appears once its agent "
                        "has connected" % name)
    before = gw.mode or gw.running_mode or ""
    gw.mode = mode
    forget_modes()
    audit.record("gateway.mode", "gateway", name, "set gateway %s to %s (was %s)" % (name, mode, before or "unset"),
                 before={"mode": before}, after={"mode": mode})
    db.session.commit()
    return gw, before


def modes():
    """{gateway name: mode} of the gateways whose mode was set through the API."""
    return dict(db.session.execute(select(Gateway.name, Gateway.mode).where(Gateway.mode != "")).all())


_modes = {}
_modes_lock = threading.Lock()


def cached_modes(every):
    """modes(), read at most once per `every` seconds per database however many sessions ask (a mode set on
    another replica reaches its gateway's session within that; one set here at once, see forget_modes)."""
    key = str(db.engine.url)
    with _modes_lock:
        now = time.monotonic()
        cached = _modes.get(key)
        if cached is None or now - cached[0] >= every:
            cached = _modes[key] = (now, modes())
            db.session.commit()
        return cached[1]


def forget_modes():
    """Drop the cached modes: the sessions of this process read them again at their next check."""
    with _modes_lock:
        _modes.clear()
