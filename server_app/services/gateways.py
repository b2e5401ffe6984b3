"""Gateway sessions in the database: which replica holds each one, and whether it still counts as connected.

Replicas share the database (docs/ha.md), so a row's `connected` flag alone can outlive the process that set it
(kill -9, a host lost). A session is shown as connected only while the replica that holds it keeps hearing
from the gateway (`last_seen`, refreshed by its heartbeats), and a replica that starts clears the sessions it
held before it stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import update

from ..extensions import db
from ..models import Gateway, utcnow

log = logging.getLogger(__name__)

DEAD_AFTER = 30.0   # seconds without a frame from a gateway: its session is dead (docs/protocol.md)


def connected(gw, now):
    """True while the row's session is alive: marked connected and heard from within DEAD_AFTER of `now`."""
    return bool(gw.connected and gw.last_seen is not None
                and now - gw.last_seen <= dt.timedelta(seconds=DEAD_AFTER))


def open_session(name, address, agent_version, replica, holds=""):
    """Record that `replica` now holds the session of gateway `name` (holds: what its hello said it holds, as
    JSON, "" for an agent that did not say); return the session's id."""
    session = uuid.uuid4().hex
    gw = db.session.query(Gateway).filter_by(name=name).one_or_none() or Gateway(name=name)
    gw.address = address
    gw.agent_version = agent_version
    gw.holds = holds
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
