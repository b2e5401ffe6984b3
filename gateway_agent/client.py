"""The agent: restore the last state, then follow the server (docs/protocol.md) for as long as it runs."""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import sys
import threading
import time
import uuid

import websocket

from og_kernel.og_command import CommandError, CommandRunner
from og_kernel.og_elements import Element, Holding, SortedTexts, digest_canonical
from og_kernel.og_netpolicy import TargetError

from . import __version__, state, tls

log = logging.getLogger("og.agent")

HEARTBEAT_EVERY = 10.0
DEAD_AFTER = 30.0
DRIFT_EVERY = 30.0
COUNTERS_EVERY = 15.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
HEALTHY_SESSION = 60.0     # a session that lasted this long starts the backoff over
# A server that closes the connection with a close frame (1001: it is stopping) is reconnected within a second,
# jittered, and so is every failed attempt for RESTART_WINDOW after it: a restarting server is back soon.
RECONNECT_AFTER_CLOSE = 1.0
RESTART_WINDOW = 30.0
SHORT_SESSION = 1.0        # a close (other than 1001) this soon after connecting is a refusal: back off
GIL_SWITCH = 0.0005        # seconds; see _drift_loop
MAX_MESSAGE = 1 << 20      # docs/protocol.md: larger frames break the protocol
CLOSE_GOING_AWAY = 1001    # the server is stopping
CLOSE_NO_STATUS = 1005     # a close frame without a code
CLOSE_POLICY = 1008        # WebSocket close code for a protocol violation


ALL = frozenset(["*"])    # _touched after a snapshot: everything changed


class ServerClosed(Exception):
    """The server ended the connection with a close frame."""

    def __init__(self, code, reason):
        super().__init__("%d %s" % (code, reason) if reason else str(code))
        self.code = code
        self.reason = reason

    @classmethod
    def from_frame(cls, data):
        """From a close frame's payload: a 2-byte code, then a UTF-8 reason (both optional)."""
        if len(data) < 2:
            return cls(CLOSE_NO_STATUS, "")
        return cls(int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")[:120])


class ProtocolViolation(ValueError):
    """A server frame that breaks docs/protocol.md; the agent answers with an error frame and reconnects."""


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


def _int(msg, key):
    """A non-negative integer field of a frame, or ProtocolViolation naming it."""
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolViolation("%s %s must be a non-negative integer, not %r" % (msg.get("type"), key, value))
    return value


def _list(msg, key):
    value = msg.get(key)
    if not isinstance(value, list):
        raise ProtocolViolation("%s %s must be a list of elements, not %s"
                                % (msg.get("type"), key, type(value).__name__))
    return value


def parse_frame(raw):
    """Decode one server frame into a v1 message dict, or raise ProtocolViolation saying what is wrong."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolViolation("binary frame of %d bytes: frames must be JSON text" % len(raw))
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE:
        raise ProtocolViolation("frame of %d bytes is larger than the %d-byte limit" % (size, MAX_MESSAGE))
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ProtocolViolation("frame is not valid JSON: %r" % raw[:80]) from None
    if not isinstance(msg, dict):
        raise ProtocolViolation("frame must be a JSON object, not %s" % type(msg).__name__)
    if msg.get("v") != 1:
        raise ProtocolViolation("protocol version %r is not supported; this agent speaks v1" % (msg.get("v"),))
    if msg.get("type") not in ("snapshot", "delta", "heartbeat", "error"):
        raise ProtocolViolation("unknown message type %r" % (msg.get("type"),))
    return msg


def _names(msg):
    """The optional names map of a snapshot or delta: {element: [entry target, ...]}; malformed parts dropped."""
    value = msg.get("names")
    if not isinstance(value, dict):
        return {}
    return {k: [t for t in v if isinstance(t, str)][:20] for k, v in value.items()
            if isinstance(k, str) and isinstance(v, list)}


def _parse_elements(texts, kind):
    try:
        return [Element.parse(e) for e in texts]
    except TargetError as exc:
        raise ProtocolViolation("%s: %s" % (kind, exc)) from None


class Reconnect:
    """How long the agent waits before its next connection attempt (docs/protocol.md, "Closing and reconnecting").

    Exponential backoff with full jitter, except after a close frame from the server: then the next attempt
    comes within RECONNECT_AFTER_CLOSE, and so does every failed attempt for RESTART_WINDOW after it, without
    growing the backoff. Not for 1008 (the server refused what the agent sent) nor for a close other than 1001
    within SHORT_SESSION of connecting (e.g. the server's database is down): reconnecting at once would only
    repeat it."""

    def __init__(self, uniform=random.uniform):
        self.uniform = uniform
        self.backoff = BACKOFF_MIN
        self.restarting_until = 0.0   # monotonic time until which failed attempts retry within a second

    def delay(self, now, started, opened_at, close_code):
        """Seconds to wait after an attempt that began at `started`, got a connection at `opened_at` (None: no
        connection) and ended with the server's close code `close_code` (None: no close frame)."""
        if close_code is not None and (close_code == CLOSE_GOING_AWAY or (
                close_code != CLOSE_POLICY and now - opened_at >= SHORT_SESSION)):
            self.restarting_until = now + RESTART_WINDOW
        elif opened_at is not None:
            self.restarting_until = 0.0   # a connection was made and ended otherwise: back off
        if now < self.restarting_until:
            self.backoff = BACKOFF_MIN
            return self.uniform(0, RECONNECT_AFTER_CLOSE)
        if now - started > HEALTHY_SESSION:
            self.backoff = BACKOFF_MIN    # the session was healthy for a while: start over
        delay = self.uniform(0, self.backoff)   # full jitter
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        return delay


class Agent:
    """Keeps the kernel's allowed sets equal to the server's, and keeps them as they are when no server answers."""

    def __init__(self, cfg, firewall, connect=websocket.create_connection, conntrack=None):
        self.cfg = cfg
        self.fw = firewall
        self.connect = connect
        self.conntrack = conntrack  # callable(removed elements, remaining elements) -> flows cut
        self.revision = 0
        self.elements = set()      # canonical texts of what we applied
        self._sorted = SortedTexts()  # the same texts sorted, kept in step: the digest needs no sort per delta
        self._parsed = {}          # the same texts parsed: reads of the kernel need no parse per delta
        self._touched = None       # while the drift check reads unlocked: texts deltas changed meanwhile (or ALL)
        self.stats = Stats()
        self.stop = threading.Event()
        self.boot = str(uuid.uuid4())
        self._reported = {}        # counters at the last counters frame sent: the next one sends the increments
        self._counting = None      # the thread reading and sending a counters frame, while it runs
        self.ws = None
        self.opened_at = None      # monotonic time the current attempt got its connection (set by session)
        self._chunks = {}
        self.names = state.load_names(cfg.get("state_file", ""))  # element -> entry targets, for metrics
        self.store = state.Store(cfg.get("state_file", ""))
        self.lock = threading.Lock()  # kernel changes and reads of self.elements

    # ---- the kernel --------------------------------------------------------------------------
    def ensure_policy(self):
        self.fw.preflight()
        changed = self.fw.apply()
        self.stats.policy_ok = True
        if changed:
            log.info("egress policy put in place")

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
            self.names = {e: n for e, n in names.items() if e in self.elements}
        log.info("restored saved state revision=%d elements=%d duration=%.3fs",
                 revision, count, time.monotonic() - started)

    def _replace(self, revision, parsed):
        skipped = self.fw.replace(parsed)
        self._note_skipped(skipped, revision)
        gone = {e.text for e in skipped}
        self._parsed = {e.text: e for e in parsed if e.text not in gone}
        self.elements = set(self._parsed)
        self._sorted = SortedTexts(self.elements)
        if self._touched is not None:
            self._touched = ALL
        self.revision = revision

    def _change(self, add, remove):
        """Apply a delta to the applied set, its sorted list and its parsed elements (caller holds the lock)."""
        for text in remove:
            if text in self.elements:
                self.elements.discard(text)
                del self._parsed[text]
                self._sorted.discard(text)
        for element in add:
            text = element.text
            if text not in self.elements:
                self.elements.add(text)
                self._parsed[text] = element
                self._sorted.add(text)
        if self._touched is not None and self._touched is not ALL:
            self._touched.update(remove)
            self._touched.update(e.text for e in add)

    def _applied(self):
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
        """The elements really in the kernel (caller holds the lock)."""
        return self.fw.elements(expected=list(self._parsed.values()))

    def _verify(self, revision):
        """Read the kernel back; re-apply the whole set when it differs. Returns (digest, count) of the kernel."""
        found = {e.text for e in self._kernel()}
        if found != self.elements:
            # e.g. a removed port element shared members with one that stays: rebuild instead of guessing.
            log.warning("kernel holds %d elements, expected %d at revision %d: re-applying the whole set",
                        len(found), len(self.elements), revision)
            self._replace(revision, [self._parsed[e] for e in self._sorted])
            self.stats.drift_repairs += 1
            found = {e.text for e in self._kernel()}
        return digest_canonical(found), len(found)

    def _verify_delta(self, revision, add, remove, keep):
        """Test only the members a delta changed (the drift check reads the whole set back); when that does not
        prove the delta applied, verify the whole set. Returns (digest, count)."""
        if self.fw.check_update(add=add, remove=remove, keep=keep):
            return self._applied()
        log.info("delta to revision %d not proven by testing its members: reading the whole set back", revision)
        return self._verify(revision)

    def kernel_digest(self):
        """(digest, count) of what is really in the kernel now."""
        with self.lock:
            found = {e.text for e in self._kernel()}
        return digest_canonical(found), len(found)

    def apply_snapshot(self, revision, parsed, cut=True, names=None):
        """Make the kernel hold exactly `parsed` (atomically); return (digest, count) read back from the kernel."""
        started = time.monotonic()
        with self.lock:
            before = set(self.elements)
            self._replace(revision, parsed)
            result = self._verify(revision)
            if names is not None:
                self.names = {e: n for e, n in names.items() if e in self.elements}
            self.store.save(self.revision, self._sorted, self.names)  # a snapshot compacts the journal
            remaining = set(self.elements)
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied snapshot revision=%d elements=%d duration=%.3fs", revision, result[1], took)
        if cut:
            self._cut(before - remaining, remaining)
        return result

    def apply_delta(self, base, revision, add_e, remove_e, aged=(), names=None):
        """Apply one delta in a single batch; return (digest, count) read back from the kernel."""
        started = time.monotonic()
        with self.lock:
            gone = {e.text for e in remove_e}
            # Port elements that stay may share members with removed ones (overlapping ranges).
            keep = [e for t, e in self._parsed.items() if e.port is not None and t not in gone] \
                if any(e.port is not None for e in remove_e) else []
            skipped = self.fw.update(add=add_e, remove=remove_e, keep=keep)
            self._note_skipped(skipped, revision)
            not_added = {e.text for e in skipped}
            added = [e for e in add_e if e.text not in not_added]
            added_texts = {e.text for e in added}
            removed = [e for e in remove_e if e.text in self.elements and e.text not in added_texts]
            self._change(added, gone)
            self.revision = revision
            result = self._verify_delta(revision, added, [e for e in remove_e if e.text not in self.elements], keep)
            for e in remove_e:
                self.names.pop(e.text, None)
            new_names = {e: n for e, n in (names or {}).items() if e in self.elements}
            self.names.update(new_names)
            # One fsync'd journal line, not the whole state file (docs/kernel-interface.md, "State on disk").
            self.store.record(base, revision, [e.text for e in added], gone - self.elements, new_names,
                              self._sorted, self.names)
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied delta %d->%d add=%d remove=%d elements=%d duration=%.3fs",
                 base, revision, len(add_e), len(remove_e), result[1], took)
        # Addresses that aged out of a resolver's grace period keep their live connections.
        aged_texts = {e.text for e in aged}
        self._cut_elements([e for e in removed if e.text not in aged_texts])
        return result

    def _cut(self, removed, remaining):
        """Cut the established client flows towards removed elements (texts), unless configured not to."""
        self._cut_elements([Element.parse(e) for e in removed], remaining)

    def _cut_elements(self, removed, remaining=None):
        """_cut() of parsed elements; `remaining` (texts) defaults to the applied set, read only when needed."""
        if not removed or not self.conntrack or not self.cfg.get("cut_on_remove", True):
            return
        if remaining is None:
            with self.lock:
                remaining = list(self._parsed.values())
        else:
            remaining = [Element.parse(e) for e in remaining]
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
                self._touched, expected = set(), list(self._parsed.values())
            try:
                found = {e.text for e in self.fw.elements(expected=expected)}
            finally:
                with self.lock:
                    touched, self._touched = self._touched, None
            with self.lock:
                if touched is not ALL and (found ^ self.elements) - touched:
                    log.warning("allowed sets drifted (kernel %d, expected %d elements): re-applied revision %d",
                                len(found - touched), len(self.elements - touched), self.revision)
                    self._replace(self.revision, [self._parsed[e] for e in self._sorted])
                    self.stats.drift_repairs += 1
            self.stats.policy_ok = True
        except CommandError as exc:
            self.stats.policy_ok = False
            log.error("drift check failed: %s", exc.msg)

    def _drift_loop(self):
        """Check for drift on a timer, connected or not: fail-static includes repairing what others broke."""
        # The drift and counters threads read 100,000 members in Python; with the default 5 ms GIL switch
        # interval a delta waited up to that long at each of its dozens of I/O waits while they ran.
        sys.setswitchinterval(GIL_SWITCH)
        while not self.stop.wait(float(self.cfg.get("drift_interval", DRIFT_EVERY))):
            try:
                self.repair_drift()
            except Exception:  # noqa: BLE001 - the drift thread must outlive any one failure
                log.exception("drift check crashed; trying again at the next interval")

    # ---- the connection -------------------------------------------------------------------------
    def send(self, **msg):
        msg["v"] = 1
        self.ws.send(json.dumps(msg, separators=(",", ":")))

    def holding(self):
        """What this gateway holds of the published set: its families, outside its own internal networks."""
        policy = self.fw.policy
        return Holding(policy.versions, [str(n) for n in policy.address_policy.internal])

    def hello(self):
        d, _count = self.kernel_digest()
        # holds: the server filters the published set the same way, so an element we skip costs no snapshot.
        self.send(type="hello", name=self.cfg["name"], agent_version=__version__, revision=self.revision, digest=d,
                  holds=self.holding().to_wire())

    def ack(self, result=None):
        d, count = result or self.kernel_digest()
        self.send(type="ack", revision=self.revision, digest=d, count=count)

    def handle(self, raw):
        """Apply one server frame; raise ProtocolViolation for a frame that breaks the protocol."""
        msg = parse_frame(raw)
        kind = msg["type"]
        self.stats.last_contact = time.time()
        if kind in ("snapshot", "delta") and isinstance(msg.get("revision"), int):
            self.stats.server_revision = max(self.stats.server_revision, msg["revision"])
        if kind == "snapshot":
            revision, chunk, chunks = _int(msg, "revision"), _int(msg, "chunk"), _int(msg, "chunks")
            if not chunk < chunks:
                raise ProtocolViolation("snapshot chunk %d of %d is out of range" % (chunk, chunks))
            parsed = _parse_elements(_list(msg, "elements"), "snapshot")
            if self._chunks.get("key") != (revision, chunks):
                self._chunks = {"key": (revision, chunks), "parts": {}}
            self._chunks["parts"][chunk] = parsed
            self._chunks.setdefault("names", {}).update(_names(msg))
            if len(self._chunks["parts"]) == chunks:
                parts, names, self._chunks = self._chunks["parts"], self._chunks["names"], {}
                self.ack(self.apply_snapshot(revision, [e for i in range(chunks) for e in parts[i]], names=names))
        elif kind == "delta":
            base, revision = _int(msg, "base"), _int(msg, "revision")
            if revision < base:
                raise ProtocolViolation("delta revision %d is below its base %d" % (revision, base))
            add_e = _parse_elements(_list(msg, "add"), "delta add")
            remove_e = _parse_elements(_list(msg, "remove"), "delta remove")
            aged_e = _parse_elements(_list(msg, "aged") if "aged" in msg else [], "delta aged")
            if not {e.text for e in aged_e} <= {e.text for e in remove_e}:
                raise ProtocolViolation("delta aged lists elements that are not in its remove list")
            if base != self.revision:
                log.info("delta %d->%d does not start at applied revision %d: not applied, asking again",
                         base, revision, self.revision)
                self.hello()
                return
            if revision != base or add_e or remove_e:
                self.ack(self.apply_delta(base, revision, add_e, remove_e, aged_e, names=_names(msg)))
            else:
                self.ack()
        elif kind == "error":
            log.error("server refused us: %s: %s", msg.get("code"), str(msg.get("message"))[:300])

    def session(self, url):
        """One connection: hello, then frames until it breaks. Returns when the connection ends."""
        headers = ["Authorization: Bearer " + self.cfg["token"]]
        self.ws = tls.connect(self.connect, url, self.cfg, header=headers, timeout=10)
        self.opened_at = time.monotonic()
        self.ws.settimeout(1.0)
        self._chunks = {}  # chunks of a snapshot never span connections
        self.stats.connected = True
        self.stats.server = url
        log.info("connected to %s at revision %d", url, self.revision)
        try:
            self.hello()
            last_heard = last_beat = last_counters = time.monotonic()
            while not self.stop.is_set():
                try:
                    opcode, data = self.ws.recv_data()
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        # websocket-client has answered the close already: hang up without waiting.
                        self.ws.shutdown()
                        raise ServerClosed.from_frame(data)
                    raw = data.decode("utf-8") if opcode == websocket.ABNF.OPCODE_TEXT else data
                    last_heard = time.monotonic()
                    try:
                        self.handle(raw)
                    except ProtocolViolation as exc:
                        self.stats.bad_frames += 1
                        log.error("bad frame from %s: %s; closing (1008) and reconnecting, rules stay at "
                                  "revision %d", url, exc, self.revision)
                        self.send(type="error", code="bad_message", message=str(exc)[:500])
                        self.ws.close(status=CLOSE_POLICY, reason=str(exc)[:120].encode(), timeout=1)
                        return
                except websocket.WebSocketTimeoutException:
                    pass
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_EVERY:
                    self.send(type="heartbeat", ts=time.time())
                    last_beat = now
                if now - last_counters >= COUNTERS_EVERY:
                    self.send_counters()
                    last_counters = now
                if now - last_heard > DEAD_AFTER:
                    log.warning("no frame from %s for %ds: reconnecting", url, DEAD_AFTER)
                    return
        finally:
            self.stats.connected = False
            try:
                self.ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail any way
                pass

    def send_counters(self):
        """Send what each element carried since the previous frame (only elements that carried anything), from a
        thread of its own: reading 100,000 counters takes seconds, and deltas must not wait behind it."""
        if self._counting is not None and self._counting.is_alive():
            return  # the previous read is not done: this period's traffic goes with the next frame
        self._counting = threading.Thread(target=self._send_counters, args=(self.ws,), name="og-counters",
                                          daemon=True)
        self._counting.start()

    def _send_counters(self, ws):
        with self.lock:
            expected = list(self._parsed.values())
        try:
            counters = self.fw.counters(expected)  # read unlocked: deltas do not wait for 100,000 counters
        except CommandError as exc:
            log.warning("counters not read: %s; trying again at the next interval", exc.msg)
            return
        totals, increments = {}, {}
        reported = self._reported
        for element, value in counters.items():
            now = value.as_dict()
            key = str(element)
            totals[key] = now
            before = reported.get(key)
            # A counter that went down was reset (the set was swapped): all of it is new.
            delta = {k: v - before[k] if before and v >= before[k] else v for k, v in now.items()}
            if any(delta.values()):
                increments[key] = delta
        try:
            ws.send(json.dumps({"type": "counters", "ts": time.time(), "boot": self.boot, "increments": True,
                                "counters": increments, "v": 1}, separators=(",", ":")))
        except Exception as exc:  # noqa: BLE001 - a closed connection; the session notices it by itself
            log.info("counters frame not sent (%s): reported with the next one", exc.__class__.__name__)
            return
        self._reported = totals   # only once sent: a failed send is reported with the next frame

    def run(self):
        """Follow the servers until stopped; the rules stay as they are whenever no server answers."""
        self.ensure_policy()
        self.restore()
        threading.Thread(target=self._drift_loop, name="og-drift", daemon=True).start()
        reconnect = Reconnect()
        attempt = 0
        servers = self.cfg["servers"]
        while not self.stop.is_set():
            url = servers[attempt % len(servers)]
            attempt += 1
            started = time.monotonic()
            self.opened_at = None
            close_code = None
            try:
                self.session(url)
            except ServerClosed as exc:
                close_code = exc.code
                log.info("server %s closed the connection: %s", url, exc)
            except websocket.WebSocketConnectionClosedException as exc:
                log.info("connection to %s lost: %s", url, exc)
            except tls.TransportError as exc:
                log.error("connection to %s refused: %s; rules stay at revision %d", url, exc, self.revision)
            except Exception as exc:  # any failure: keep the rules, wait, try the next server
                log.warning("connection to %s failed: %s", url, exc.__class__.__name__ + ": " + str(exc)[:200])
            if self.stop.is_set():
                break
            self.stats.reconnects += 1
            delay = reconnect.delay(time.monotonic(), started, self.opened_at, close_code)
            log.info("reconnecting in %.1fs to %s; rules stay at revision %d", delay,
                     servers[attempt % len(servers)], self.revision)
            self.stop.wait(delay)
        log.info("stopped at revision %d; the rules stay in place", self.revision)


# ---- cutting established connections ----------------------------------------------------------------
class Matcher:
    """Answers 'does any of these elements allow this destination?' with a few hash lookups."""

    def __init__(self, elements):
        self.nets = {}  # (version, prefixlen) -> {network as int: [None or (proto, first, last)]}
        for element in elements:
            net = element.network
            self.nets.setdefault((net.version, net.prefixlen), {}).setdefault(
                int(net.network_address), []).append(element.proto_ports)

    def matches(self, address, proto=None, port=None):
        addr = ipaddress.ip_address(address)
        value = int(addr)
        for (version, prefixlen), nets in self.nets.items():
            if version != addr.version:
                continue
            shift = addr.max_prefixlen - prefixlen
            for scope in nets.get(value >> shift << shift, ()):
                if scope is None or (scope[0] == proto and port is not None and scope[1] <= port <= scope[2]):
                    return True
        return False


class Flow:
    """One conntrack entry, original direction."""

    __slots__ = ("proto", "src", "dst", "sport", "dport")

    def __init__(self, proto, src, dst, sport=None, dport=None):
        self.proto, self.src, self.dst, self.sport, self.dport = proto, src, dst, sport, dport

    def delete_argv(self, family):
        argv = ["conntrack", "-D", "-f", family, "-p", self.proto, "-s", self.src, "-d", self.dst]
        if self.sport is not None and self.dport is not None:
            argv += ["--sport", str(self.sport), "--dport", str(self.dport)]
        return argv


PORTED = ("tcp", "udp", "sctp", "dccp", "udplite")


def parse_conntrack(text):
    """Flows (original direction) from `conntrack -L` output; lines it cannot read are skipped."""
    flows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].isdigit():
            continue
        fields = {}
        for word in words:
            key, eq, value = word.partition("=")
            if eq and key not in fields:  # the first of each key is the original direction
                fields[key] = value
        if "src" not in fields or "dst" not in fields:
            continue
        ports = words[0] in PORTED and fields.get("sport", "").isdigit() and fields.get("dport", "").isdigit()
        flows.append(Flow(words[0], fields["src"], fields["dst"],
                          int(fields["sport"]) if ports else None, int(fields["dport"]) if ports else None))
    return flows


class ConnectionCutter:
    """Deletes the conntrack entries of client flows whose destination was removed and is allowed no more.

    Without this, OG-FORWARD's ESTABLISHED rules keep such flows alive; after the delete their next packet is a
    new flow that the policy rejects. Flows of the gateway itself, and flows to destinations another element
    still allows, are left alone.
    """

    def __init__(self, client_networks, ipv6=False, run=None):
        self.clients = Matcher([Element(n) for n in client_networks])
        self.families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
        self.run = run or CommandRunner()

    def __call__(self, removed, remaining):
        gone, kept = Matcher(removed), None
        cut = 0
        for family in self.families:
            listing = self.run(["conntrack", "-L", "-f", family], check=False)
            for flow in parse_conntrack(listing.stdout):
                if not (self.clients.matches(flow.src) and gone.matches(flow.dst, flow.proto, flow.dport)):
                    continue
                if kept is None:
                    kept = Matcher(remaining)  # built only when a flow needs it: 100,000 elements cost ~1 s
                if not kept.matches(flow.dst, flow.proto, flow.dport):
                    if self.run(flow.delete_argv(family), check=False).rc == 0:
                        cut += 1
        return cut
