"""The hub, the publisher: notices new revisions in the change log (from any replica) and wakes gateway sessions.

It also keeps what every session needs per revision (digests, commit times) and writes the sessions' states
in batches. Services call wake(revision) after they commit a change, so this replica's sessions send it at
once; the changes other replicas commit are seen by the poll.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select, update

from ..extensions import db, hub as current_hub
from ..models import Change, Gateway
from . import changelog, gateways

log = logging.getLogger(__name__)


def wake(revision=None):
    """Tell the current app's hub that a commit made `revision` (None: poll the log now); no-op without a hub."""
    hub = current_hub()
    if hub is None:
        return
    if revision:
        hub.announce(revision)
    else:
        hub.notify()


class Hub:
    """One per process: a thread polls the log head and wakes the waiting gateway sessions."""

    def __init__(self, app, poll_interval=0.2):
        self.app = app
        self.poll_interval = poll_interval
        self.replica = app.config["OG"]["replica_name"]   # recorded with each gateway session it holds
        self.revision = 0
        self.cond = threading.Condition()
        self._stop = threading.Event()
        # Set when the process begins a graceful stop (SIGTERM): every session sends 1001 and returns.
        self.stopping = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        # Callables run on every new revision (gateway sessions wake their own event: no polling).
        self.listeners = set()
        self._facts_lock = threading.Lock()
        self._digest = None
        self._committed = {}
        self._held = {}
        self._states_lock = threading.Lock()
        self._states = {}
        self._flush_failing = False   # a failed batch is logged once, not at every poll

    def start(self):
        with self._lock:
            if self._thread is None:
                self._release_sessions()   # before this process holds any session
                self._thread = threading.Thread(target=self._loop, name="og-hub", daemon=True)
                self._thread.start()

    def shutdown(self):
        """Begin a graceful stop: wake every gateway session so it closes with 1001 and returns.

        Safe in a signal handler: it only sets events that the main thread never holds."""
        self.stopping.set()
        for listener in list(self.listeners):
            listener()

    def stop(self):
        """Stop the hub's thread; write the last gateway states."""
        self.shutdown()
        self._stop.set()
        self.notify()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2)
        try:
            with self.app.app_context():
                self.flush_gateways()
        except Exception:  # noqa: BLE001 - the database may be gone; the states are lost with the process
            log.exception("could not write the last gateway states")

    def _release_sessions(self):
        """Mark disconnected the gateways whose sessions this replica held before it (re)started."""
        try:
            with self.app.app_context():
                gateways.release_replica(self.replica)
        except Exception:  # noqa: BLE001 - the fleet view still ages them out after DEAD_AFTER
            log.exception("could not clear the gateway sessions of replica %s's previous run", self.replica)

    def notify(self):
        """Wake the hub's thread now instead of at the next poll."""
        with self.cond:
            self.cond.notify_all()

    def announce(self, head, forward_only=True):
        """Make `head` the revision the sessions catch up to, and wake them; forward_only: never move back (a
        commit's announcement may arrive after a newer one's)."""
        with self.cond:
            if head == self.revision or (forward_only and head < self.revision):
                return
            self.revision = head
            self.cond.notify_all()
        for listener in list(self.listeners):
            listener()

    # ---- per-revision facts, computed once for all sessions ------------------------------------
    def head_digest(self):
        """(head revision, digest of the published set at it), computed once per revision."""
        with self._facts_lock:
            if self._digest is None or self._digest[0] != self.revision:
                revision, value = changelog.digest_at_head()
                db.session.commit()
                self._digest = (revision, value)
            return self._digest

    def held_digest(self, holding, acked=0):
        """(head revision, digest of what a gateway holding `holding` is meant to hold), once per revision;
        never older than `acked`, a revision a gateway acknowledged (the hub's poll may not have seen it yet)."""
        if holding is None:
            return self.head_digest()
        with self._facts_lock:
            cached = self._held.get(holding.key)
            if cached is None or cached[0] < max(self.revision, acked):
                revision, _skipped, value = changelog.held_at_head(holding)
                db.session.commit()
                if len(self._held) > 64:
                    self._held.clear()
                cached = self._held[holding.key] = (revision, value)
            return cached

    def committed_at(self, revision):
        """When a revision was committed (None if unknown), cached for the newest 256 revisions."""
        with self._facts_lock:
            if revision not in self._committed:
                self._committed[revision] = db.session.execute(
                    select(func.min(Change.at)).where(Change.revision == revision)).scalar()
                db.session.commit()
                while len(self._committed) > 256:
                    self._committed.pop(next(iter(self._committed)))
            return self._committed[revision]

    # ---- gateway states, written in batches ------------------------------------------------------
    def record_gateway(self, name, session, **fields):
        """Record fields of gateway `name`'s row as its session `session` (the id gateways.open_session gave it)
        saw them; the next flush writes them."""
        with self._states_lock:
            self._states.setdefault((name, session), {}).update(fields)

    def flush_gateways(self):
        """Write the recorded gateway states in one transaction, each only while its session still holds the
        gateway's row: a state this replica kept (a failed flush) after the gateway moved to a newer session on
        another replica never overwrites that session's. A failed batch is logged once and kept for the next
        try (newer values win)."""
        with self._states_lock:
            states, self._states = self._states, {}
        if not states:
            return
        try:
            for (name, session), fields in states.items():
                db.session.execute(update(Gateway).where(Gateway.name == name, Gateway.session_id == session)
                                   .values(**fields))
            db.session.commit()
        except Exception:  # noqa: BLE001 - a database outage: the hub's poll backs off, the states wait
            db.session.rollback()
            with self._states_lock:
                for key, fields in states.items():
                    self._states[key] = dict(fields, **self._states.get(key, {}))
            if not self._flush_failing:
                log.warning("could not write %d gateway state(s); kept for the next try", len(states),
                            exc_info=True)
            self._flush_failing = True
            return
        if self._flush_failing:
            log.info("gateway states written again")
        self._flush_failing = False

    def wait(self, seen, timeout):
        """Block until the head revision is beyond `seen` or timeout; return the head revision."""
        with self.cond:
            if self.revision <= seen:
                self.cond.wait(timeout)
            return self.revision

    def _loop(self):
        backoff = self.poll_interval
        polled = None
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    self.flush_gateways()    # before the head: a state is written before the next announce
                    head = changelog.head_revision()
                    db.session.remove()
                if head != polled:
                    # A head that went down (a database restored) is followed; one that went up never moves
                    # the revision back behind one a local commit announced in the meantime.
                    self.announce(head, forward_only=polled is not None and head > polled)
                    polled = head
                backoff = self.poll_interval
            except Exception:  # the hub never dies: a database outage is retried with backoff
                log.exception("hub poll failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, 5.0)
            with self.cond:
                self.cond.wait(backoff)
