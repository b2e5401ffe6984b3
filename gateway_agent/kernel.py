"""Applying to the kernel: the agent's applied set, snapshots and deltas into the sets, drift repair, cutting."""

from __future__ import annotations

import logging
import sys
import threading
import time

from og_kernel.og_command import CommandError
from og_kernel.og_elements import Element, SortedTexts, digest_canonical
from og_kernel.og_netpolicy import TargetError

from . import state

log = logging.getLogger("og.agent")

DRIFT_EVERY = 30.0
GIL_SWITCH = 0.0005        # seconds; see drift_loop
ALL = frozenset(["*"])     # _touched after a snapshot: everything changed


class Stats:
    """What the metrics endpoint reports about the agent itself."""

    def __init__(self):
        self.connected = False
        self.reconnects = 0
        self.skipped = {"internal": 0, "family_disabled": 0}
        self.bad_frames = 0
        self.connections_cut = 0
        self.drift_repairs = 0
        self.apply_seconds = []  # observed durations, drained by the metrics collector
        self.policy_ok = False
        self.server = ""
        self.server_revision = 0     # the newest revision a server announced (snapshot or delta)
        self.last_contact = 0.0      # unix time of the last frame from a server
        self.mode = "enforce"        # what the kernel's OG-REJECT does now: enforce or observe
        self.blocked_sent = 0        # attempts reported to servers in blocked frames
        self.clients_counted = 0     # client addresses in the per-client sets at the last read
        self.client_sets_full = 0    # per-client sets full at the last read (new clients not counted)


class Kernel:
    """The applied set (parsed elements, by canonical text) and the one way it reaches the kernel's sets.

    Elements arrive parsed (og_protocol parses a frame's texts once, the state file is parsed at restore) and
    stay parsed: nothing on the way to the kernel or to conntrack parses them again.
    """

    def __init__(self, cfg, firewall, conntrack=None, stats=None):
        self.cfg = cfg
        self.fw = firewall
        self.conntrack = conntrack  # callable(removed elements, remaining elements) -> flows cut
        self.stats = stats or Stats()
        self.revision = 0
        self.applied = {}          # canonical text -> Element of what we applied
        self._sorted = SortedTexts()  # the same texts sorted, kept in step: the digest needs no sort per delta
        self._touched = None       # while the drift check reads unlocked: texts deltas changed meanwhile (or ALL)
        self.names = state.load_names(cfg.get("state_file", ""))  # element -> entry targets, for metrics
        self.store = state.Store(cfg.get("state_file", ""))
        # (missing, extra): the texts of the applied set the kernel lacked and those it held beyond it at the
        # last read of the whole sets; an ack names them (og_protocol.FEATURE_DIFFERS).
        self.differs = (frozenset(), frozenset())
        self.lock = threading.Lock()  # kernel changes and reads of the applied set

    @property
    def elements(self):
        """The canonical texts of the applied set (a live, set-like view: read it under the lock)."""
        return self.applied.keys()

    def ensure_policy(self):
        self.fw.preflight()
        changed = self.fw.apply()
        self.stats.policy_ok = True
        self.stats.mode = self.fw.policy.mode
        if changed:
            log.info("egress policy put in place (mode %s)", self.fw.policy.mode)

    def set_mode(self, mode):
        """Enforce or observe from now on, as a server said (a reload of OG-REJECT; the allowed sets stay), kept on
        disk for the next start (state.save_mode); True if it changed."""
        with self.lock:
            self._save_mode(mode)
            if self.fw.policy.mode == mode:
                return False
            before, self.fw.policy.mode = self.fw.policy.mode, mode
            try:
                self.fw.apply()
            except CommandError:
                self.fw.policy.mode = before
                raise
            self.stats.mode = mode
        log.warning("gateway mode %s -> %s%s", before, mode,
                    ": refused traffic is forwarded and recorded as would-have-been-refused" if mode == "observe"
                    else ": traffic that is not allowed is refused")
        return True

    def _save_mode(self, mode):
        try:
            state.save_mode(self.cfg.get("state_file", ""), mode)
        except OSError as exc:
            # The mode still applies now; a restart without a server would run the configuration's.
            log.error("cannot keep gateway mode %s in %s: %s", mode, state.mode_path(self.cfg["state_file"]),
                      exc.strerror)

    def blocked(self):
        """The attempts recorded in the kernel (og_firewall.Attempt), read without the lock; raises CommandError."""
        return self.fw.blocked()

    def client_counters(self):
        """([og_firewall.ClientCounters], [full set names]) read without the lock; raises CommandError."""
        return self.fw.client_counters()

    def restore(self):
        """Put the last applied state back into the kernel before connecting (fail-static at boot)."""
        path = self.cfg["state_file"]
        try:
            revision, elements, names = self.store.restore()
            parsed = None if elements is None else [Element.parse(e) for e in elements]
        except (state.StateError, TargetError) as exc:
            log.error("saved state unusable: %s; starting from what the kernel holds until a server answers", exc)
            return
        if parsed is None:
            log.info("no saved state at %s: starting empty (default deny) until a server answers", path)
            return
        started = time.monotonic()
        with self.lock:
            self._replace(revision, parsed)
            _digest, count = self._verify(revision)
            self.names = {e: n for e, n in names.items() if e in self.applied}
        log.info("restored saved state revision=%d elements=%d duration=%.3fs",
                 revision, count, time.monotonic() - started)

    def _replace(self, revision, parsed):
        skipped = self.fw.replace(parsed)
        self._note_skipped(skipped, revision)
        gone = {e.text for e in skipped}
        self.applied = {e.text: e for e in parsed if e.text not in gone}
        self._sorted = SortedTexts(self.applied)
        if self._touched is not None:
            self._touched = ALL
        self.revision = revision

    def _change(self, add, remove):
        """Apply a delta to the applied set and its sorted texts (caller holds the lock)."""
        for text in remove:
            if self.applied.pop(text, None) is not None:
                self._sorted.discard(text)
        for element in add:
            text = element.text
            if text not in self.applied:
                self.applied[text] = element
                self._sorted.add(text)
        if self._touched is not None and self._touched is not ALL:
            self._touched.update(remove)
            self._touched.update(e.text for e in add)

    def _digest(self):
        """(digest, count) of the applied set, from the sorted texts kept in step with it."""
        return self._sorted.digest(), len(self._sorted)

    def _note_skipped(self, skipped, revision):
        if not skipped:
            return
        internal = [e for e in skipped if self.fw.policy.address_policy.is_internal(e.net)]
        other = [e for e in skipped if e not in internal]
        for reason, elements, why in (("internal", internal, "inside this gateway's internal networks"),
                                      ("family_disabled", other, "IPv6 while ipv6 is off")):
            if elements:
                self.stats.skipped[reason] += len(elements)
                log.warning("skipped %d element(s) %s at revision %d: %s", len(elements), why, revision,
                            " ".join(sorted(e.text for e in elements)[:10]))

    def _kernel(self):
        """The canonical texts of the elements really in the kernel (caller holds the lock)."""
        return {e.text for e in self.fw.elements(expected=list(self.applied.values()))}

    def _verify(self, revision):
        """Read the kernel back; re-apply the whole set when it differs. Returns (digest, count) of the kernel."""
        found = self._kernel()
        if found != self.applied.keys():
            # e.g. a removed port element shared members with one that stays: rebuild instead of guessing.
            log.warning("kernel holds %d elements, expected %d at revision %d: re-applying the whole set",
                        len(found), len(self.applied), revision)
            self._replace(revision, [self.applied[e] for e in self._sorted])
            self.stats.drift_repairs += 1
            found = self._kernel()
        self._note_differs(found)
        return digest_canonical(found), len(found)

    def _note_differs(self, found):
        """Keep what the kernel (`found`, texts) lacks of the applied set and holds beyond it (lock held)."""
        applied = self.applied.keys()
        missing, extra = frozenset(applied - found), frozenset(found - applied)
        if missing or extra:
            log.warning("kernel differs from the applied set at revision %d: %d missing (%s), %d extra (%s)",
                        self.revision, len(missing), " ".join(sorted(missing)[:5]), len(extra),
                        " ".join(sorted(extra)[:5]))
        self.differs = (missing, extra)

    def _verify_delta(self, revision, add, remove, keep):
        """Test only the members a delta changed (the drift check reads the whole set back); when that does not
        prove the delta applied, verify the whole set. Returns (digest, count)."""
        if self.fw.check_update(add=add, remove=remove, keep=keep):
            # The delta's members are proven; what differed elsewhere at the last full read still does.
            changed = {e.text for e in add} | {e.text for e in remove}
            self.differs = tuple(frozenset(texts - changed) for texts in self.differs)
            return self._digest()
        log.info("delta to revision %d not proven by testing its members: reading the whole set back", revision)
        return self._verify(revision)

    def kernel_digest(self):
        """(digest, count) of what is really in the kernel now."""
        with self.lock:
            found = self._kernel()
            self._note_differs(found)
        return digest_canonical(found), len(found)

    def apply_snapshot(self, revision, parsed, cut=True, names=None):
        """Make the kernel hold exactly `parsed` (atomically); return (digest, count) read back from the kernel."""
        started = time.monotonic()
        with self.lock:
            before = self.applied
            self._replace(revision, parsed)
            result = self._verify(revision)
            if names is not None:
                self.names = {e: n for e, n in names.items() if e in self.applied}
            self.store.save(self.revision, self._sorted, self.names)  # a snapshot compacts the journal
            remaining = list(self.applied.values())
            removed = [e for t, e in before.items() if t not in self.applied]
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied snapshot revision=%d elements=%d duration=%.3fs", revision, result[1], took)
        if cut:
            self._cut(removed, remaining)
        return result

    def apply_delta(self, base, revision, add_e, remove_e, aged=(), names=None):
        """Apply one delta in a single batch; return (digest, count) read back from the kernel."""
        started = time.monotonic()
        with self.lock:
            gone = {e.text for e in remove_e}
            # Port elements that stay may share members with removed ones (overlapping ranges).
            keep = [e for t, e in self.applied.items() if e.port is not None and t not in gone] \
                if any(e.port is not None for e in remove_e) else []
            skipped = self.fw.update(add=add_e, remove=remove_e, keep=keep)
            self._note_skipped(skipped, revision)
            not_added = {e.text for e in skipped}
            added = [e for e in add_e if e.text not in not_added]
            added_texts = {e.text for e in added}
            removed = [e for e in remove_e if e.text in self.applied and e.text not in added_texts]
            self._change(added, gone)
            self.revision = revision
            result = self._verify_delta(revision, added, [e for e in remove_e if e.text not in self.applied], keep)
            for e in remove_e:
                self.names.pop(e.text, None)
            new_names = {e: n for e, n in (names or {}).items() if e in self.applied}
            self.names.update(new_names)
            # One fsync'd journal line, not the whole state file (docs/kernel-interface.md, "State on disk").
            self.store.record(base, revision, [e.text for e in added], gone - self.applied.keys(), new_names,
                              self._sorted, self.names)
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied delta %d->%d add=%d remove=%d elements=%d duration=%.3fs",
                 base, revision, len(add_e), len(remove_e), result[1], took)
        # Addresses that aged out of a resolver's grace period keep their live connections.
        aged_texts = {e.text for e in aged}
        self._cut([e for e in removed if e.text not in aged_texts])
        return result

    def _cut(self, removed, remaining=None):
        """Cut the established client flows towards `removed` elements, unless configured not to; `remaining`
        (elements) defaults to the applied set, read only when needed."""
        if not removed or not self.conntrack or not self.cfg.get("cut_on_remove", True):
            return
        if remaining is None:
            with self.lock:
                remaining = list(self.applied.values())
        try:
            cut = self.conntrack(removed, remaining)
        except CommandError as exc:
            log.warning("could not cut connections to %d removed element(s): %s", len(removed), exc.msg)
            return
        self.stats.connections_cut += cut
        if cut:
            log.info("cut %d connection(s) to %d removed element(s)", cut, len(removed))

    def repair_drift(self):
        """Re-apply policy and sets when someone changed them behind our back (the full verify of all deltas).

        The whole set is read back without the lock, so deltas do not queue behind a read of 100,000 members;
        elements that deltas changed meanwhile are left out of the comparison (each delta verified its own), and
        a snapshot meanwhile makes the read moot until the next interval.
        """
        try:
            with self.lock:
                if self.fw.plan().changed:
                    self.fw.apply()
                    log.warning("egress policy drifted: re-applied")
                    self.stats.drift_repairs += 1
            with self.lock:
                self._touched, expected = set(), list(self.applied.values())
            try:
                found = {e.text for e in self.fw.elements(expected=expected)}
            finally:
                with self.lock:
                    touched, self._touched = self._touched, None
            with self.lock:
                if touched is not ALL and (found ^ self.applied.keys()) - touched:
                    log.warning("allowed sets drifted (kernel %d, expected %d elements): re-applied revision %d",
                                len(found - touched), len(self.applied.keys() - touched), self.revision)
                    self._replace(self.revision, [self.applied[e] for e in self._sorted])
                    self.stats.drift_repairs += 1
            self.stats.policy_ok = True
        except CommandError as exc:
            self.stats.policy_ok = False
            log.error("drift check failed: %s", exc.msg)

    def drift_loop(self, stop):
        """Check for drift on a timer until `stop` is set, connected or not: fail-static includes repairing what
        others broke."""
        # The drift and counters threads read 100,000 members in Python; with the default 5 ms GIL switch
        # interval a delta waited up to that long at each of its dozens of I/O waits while they ran.
        sys.setswitchinterval(GIL_SWITCH)
        while not stop.wait(float(self.cfg.get("drift_interval", DRIFT_EVERY))):
            try:
                self.repair_drift()
            except Exception:  # noqa: BLE001 - the drift thread must outlive any one failure
                log.exception("drift check crashed; trying again at the next interval")

    def counters(self):
        """{element text: {out_bytes, ...}} of every applied element, read from the kernel without the lock
        (deltas do not wait for 100,000 counters); raises CommandError."""
        with self.lock:
            expected = list(self.applied.values())
        return {str(e): value.as_dict() for e, value in self.fw.counters(expected).items()}
