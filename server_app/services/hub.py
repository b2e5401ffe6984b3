"""The hub: notices new revisions in the change log (from any replica) and wakes gateway sessions."""

from __future__ import annotations

import logging
import threading
import time

from . import changelog, entries

log = logging.getLogger(__name__)


class Hub:
    """One per process: a thread polls the log head, expires entries, and wakes waiting sessions."""

    def __init__(self, app, poll_interval=0.2):
        self.app = app
        self.poll_interval = poll_interval
        self.revision = 0
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        # Callables run on every new revision (gateway sessions wake their own event: no polling).
        self.listeners = set()

    def start(self):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="og-hub", daemon=True)
                self._thread.start()
        resolver = self.app.extensions.get("og_resolver")
        if resolver is not None:
            resolver.start()

    def stop(self):
        self._stop.set()
        self.notify()
        resolver = self.app.extensions.get("og_resolver")
        if resolver is not None:
            resolver.stop()

    def notify(self):
        """Wake the hub now (after a local commit) instead of at the next poll."""
        with self.cond:
            self.cond.notify_all()

    def created(self, entry):
        """An entry was committed: wake the sessions, and resolve a domain at once (in this request)."""
        resolver = self.app.extensions.get("og_resolver")
        if entry.kind == "domain" and resolver is not None and self.app.config["OG"]["resolver_enabled"]:
            try:
                resolver.resolve_entry_now(entry.id, entry.target)
            except Exception:  # the loop resolves it at its next pass
                log.exception("could not resolve %s at once", entry.target)
                from ..models import db
                db.session.rollback()
        self.notify()

    def wait(self, seen, timeout):
        """Block until the head revision is beyond `seen` or timeout; return the head revision."""
        with self.cond:
            if self.revision <= seen:
                self.cond.wait(timeout)
            return self.revision

    def _loop(self):
        last_expiry = 0.0
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    now = time.monotonic()
                    if now - last_expiry >= 1.0:
                        last_expiry = now
                        for revision in entries.expire():
                            log.info("entry expired revision=%s", revision)
                    head = changelog.head_revision()
                    from ..models import db
                    db.session.remove()
                if head != self.revision:
                    with self.cond:
                        self.revision = head
                        self.cond.notify_all()
                    for wake in list(self.listeners):
                        wake()
                backoff = self.poll_interval
            except Exception:  # the hub never dies: a database outage is retried with backoff
                log.exception("hub poll failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, 5.0)
            with self.cond:
                self.cond.wait(backoff)
