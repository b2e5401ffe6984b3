"""The housekeeper: the server's periodic chores, each on its own schedule in one thread of its own.

Every second it deletes the entries whose expiry has passed and the learned addresses whose learned answer
ended (services/learned.py), waking the hub when that made revisions; every
5 seconds it writes the gateways' traffic counters gathered in memory, every 10 seconds it bounds the unlisted
names (services/unlisted.py: dns_unlisted_retention_days, then dns_unlisted_max_rows) and the DNS answers
(services/answers.py: dns_answers_retention_days, then dns_answers_max_rows), every minute it prunes the
blocked attempts to blocked_retention_days and blocked_max_rows (services/blocked.py), and every hour it sums
the per-minute traffic older than 25 hours into hourly rows (services/traffic.py, rollup) and deletes traffic
older than traffic_retention_days.
"""

from __future__ import annotations

import logging
import threading
import time

from ..extensions import db
from ..models import utcnow
from . import answers, blocked, entries, learned, unlisted

log = logging.getLogger(__name__)

EXPIRE_EVERY = 1.0
TRAFFIC_FLUSH_EVERY = 5.0
TRAFFIC_PRUNE_EVERY = 3600.0
# The unlisted table may hold more than dns_unlisted_max_rows for up to this long (og-dns writes at most one
# frame a second per gateway, with at most 1,000 names each).
UNLISTED_PRUNE_EVERY = 10.0
BLOCKED_PRUNE_EVERY = 60.0


class Housekeeper:
    """One per process: runs the chores that are due, then sleeps until the next one."""

    def __init__(self, app):
        self.app = app
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._last = {"expire": 0.0, "flush": 0.0, "prune": 0.0, "unlisted": 0.0, "blocked": 0.0}

    def start(self):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="og-housekeeper", daemon=True)
                self._thread.start()

    def stop(self):
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _due(self, chore, every, now):
        if now - self._last[chore] >= every:
            self._last[chore] = now
            return True
        return False

    def run_due(self, now=None):
        """Run every chore whose time has come (needs an app context)."""
        now = time.monotonic() if now is None else now
        if self._due("expire", EXPIRE_EVERY, now):
            for revision in entries.expire():    # entries.delete wakes the hub
                log.info("entry expired revision=%s", revision)
            revision = learned.expire()
            if revision is not None:
                log.info("learned addresses expired revision=%s", revision)
        if self._due("unlisted", UNLISTED_PRUNE_EVERY, now):
            cfg = self.app.config["OG"]
            gone = unlisted.prune(cfg["dns_unlisted_max_rows"], cfg["dns_unlisted_retention_days"], utcnow())
            counter = self.app.extensions.get("og_unlisted_pruned")
            for reason, count in gone.items():
                if count:
                    log.info("unlisted names pruned reason=%s rows=%d", reason, count)
                    if counter is not None:
                        counter.labels(reason=reason).inc(count)
            gone = answers.prune(cfg["dns_answers_max_rows"], cfg["dns_answers_retention_days"], utcnow())
            for reason, count in gone.items():
                if count:
                    log.info("dns answers pruned reason=%s rows=%d", reason, count)
        if self._due("blocked", BLOCKED_PRUNE_EVERY, now):
            gone = blocked.prune(self.app.config["OG"])
            if gone:
                log.info("blocked attempts pruned rows=%d", gone)
        traffic = self.app.extensions.get("og_traffic")
        if traffic is not None and self._due("flush", TRAFFIC_FLUSH_EVERY, now):
            traffic.flush()
            if self._due("prune", TRAFFIC_PRUNE_EVERY, now):
                traffic.rollup()
                traffic.prune(self.app.config["OG"]["traffic_retention_days"])

    def _loop(self):
        backoff = EXPIRE_EVERY
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    try:
                        self.run_due()
                    finally:
                        db.session.remove()
                backoff = EXPIRE_EVERY
            except Exception:  # the housekeeper never dies: a database outage is retried with backoff
                log.exception("housekeeping failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, 5.0)
            self._stop.wait(backoff)
