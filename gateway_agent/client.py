"""The agent's connection and state machine: restore the last state, then follow the servers (docs/protocol.md)
for as long as it runs, reconnecting by the rule of Reconnect. Frames are handled in frames.py, the kernel
work is kernel.py's."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

import websocket

from og_kernel import og_protocol
from og_kernel.og_command import CommandError
from og_kernel.og_protocol import CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_POLICY, ProtocolError

from . import tls
from .blocked import BlockedReport
from .clients import ClientReport
from .frames import Follower
from .kernel import Kernel, Stats

log = logging.getLogger("og.agent")

COUNTERS_EVERY = 15.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
HEALTHY_SESSION = 60.0     # a session that lasted this long starts the backoff over
# A server that closes the connection with a close frame (1001: it is stopping) is reconnected within a second,
# jittered, and so is every failed attempt for RESTART_WINDOW after it: a restarting server is back soon.
RECONNECT_AFTER_CLOSE = 1.0
RESTART_WINDOW = 30.0
SHORT_SESSION = 1.0        # a close (other than 1001) this soon after connecting is a refusal: back off
CONNECT_TIMEOUT = 10.0


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


def connect(cfg, url, create=websocket.create_connection):
    """Open the WebSocket to one server URL with the gateway token (and, for wss, the TLS settings of tls.py)."""
    headers = ["Authorization: Bearer " + cfg["token"]]
    return tls.connect(create, url, cfg, header=headers, timeout=CONNECT_TIMEOUT)


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
        self.connect = connect
        self.stats = Stats()
        self.kernel = Kernel(cfg, firewall, conntrack, self.stats)
        self.frames = Follower(cfg, self.kernel)
        self.stop = threading.Event()
        self.boot = str(uuid.uuid4())
        self._reported = {}        # counters at the last counters frame sent: the next one sends the increments
        self._counting = None      # the thread reading and sending a counters frame, while it runs
        self.blocked_report = BlockedReport()   # what was reported of the refused attempts (blocked frames)
        self.client_report = ClientReport()     # what was reported of each client's traffic (clients frames)
        self.ws = None
        self.opened_at = None      # monotonic time the current attempt got its connection (set by session)

    # What the metrics endpoint (metrics.py) reads of the kernel side.
    fw = property(lambda self: self.kernel.fw)
    lock = property(lambda self: self.kernel.lock)
    elements = property(lambda self: self.kernel.elements)
    names = property(lambda self: self.kernel.names)
    revision = property(lambda self: self.kernel.revision)

    def session(self, url):
        """One connection: hello, then frames until it breaks. Returns when the connection ends."""
        self.ws = connect(self.cfg, url, self.connect)
        self.opened_at = time.monotonic()
        self.ws.settimeout(1.0)
        self.frames.reset()
        self.stats.connected = True
        self.stats.server = url
        log.info("connected to %s at revision %d", url, self.kernel.revision)
        try:
            self.ws.send(self.frames.hello())
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
                        replies = self.frames.handle(raw)
                    except ProtocolError as exc:
                        self.stats.bad_frames += 1
                        log.error("bad frame from %s: %s; closing (1008) and reconnecting, rules stay at "
                                  "revision %d", url, exc, self.kernel.revision)
                        self.ws.send(og_protocol.error(exc.code, str(exc)))
                        self.ws.close(status=CLOSE_POLICY, reason=str(exc)[:120].encode(), timeout=1)
                        return
                    for reply in replies:
                        self.ws.send(reply)
                except websocket.WebSocketTimeoutException:
                    pass
                for frame in self.frames.learned():
                    self.ws.send(frame)
                now = time.monotonic()
                if now - last_beat >= og_protocol.HEARTBEAT_EVERY:
                    self.ws.send(og_protocol.heartbeat(time.time()))
                    last_beat = now
                if now - last_counters >= COUNTERS_EVERY:
                    self.send_counters()
                    last_counters = now
                if now - last_heard > og_protocol.DEAD_AFTER:
                    log.warning("no frame from %s for %ds: reconnecting", url, og_protocol.DEAD_AFTER)
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
        try:
            totals = self.kernel.counters()
        except CommandError as exc:
            log.warning("counters not read: %s; trying again at the next interval", exc.msg)
            return
        increments = {}
        reported = self._reported
        for key, now in totals.items():
            before = reported.get(key)
            # A counter that went down was reset (the set was swapped): all of it is new.
            delta = {k: v - before[k] if before and v >= before[k] else v for k, v in now.items()}
            if any(delta.values()):
                increments[key] = delta
        try:
            ws.send(og_protocol.counters(time.time(), self.boot, increments))
        except Exception as exc:  # noqa: BLE001 - a closed connection; the session notices it by itself
            log.info("counters frame not sent (%s): reported with the next one", exc.__class__.__name__)
            return
        self._reported = totals   # only once sent: a failed send is reported with the next frame
        if self.frames.sends_blocked():
            self._send_blocked(ws)
        if self.frames.sends_clients():
            self._send_clients(ws)

    def _send_blocked(self, ws):
        """The attempts refused (or observed) since the last blocked frame, in frames of MAX_BLOCKED attempts."""
        try:
            attempts = self.kernel.blocked()
        except CommandError as exc:
            log.warning("refused attempts not read: %s; trying again at the next interval", exc.msg)
            return
        items, totals = self.blocked_report.increments(attempts, time.time())
        if not items:
            self.blocked_report.sent(totals)
            return
        try:
            for frame in og_protocol.blocked(items, self.kernel.fw.policy.mode):
                ws.send(frame)
        except Exception as exc:  # noqa: BLE001 - a closed connection; the session notices it by itself
            log.info("blocked frame not sent (%s): reported with the next one", exc.__class__.__name__)
            return
        self.blocked_report.sent(totals)
        self.stats.blocked_sent += sum(item.count for item in items)

    def _send_clients(self, ws):
        """The traffic of each client address since the last clients frame, in frames of MAX_CLIENTS clients."""
        try:
            rows, full = self.kernel.client_counters()
        except CommandError as exc:
            log.warning("per-client counters not read: %s; trying again at the next interval", exc.msg)
            return
        self.stats.clients_counted = len(rows)
        if full and not self.stats.client_sets_full:
            log.warning("per-client sets full (%s): new client addresses pass but are not counted until older "
                        "ones expire", ", ".join(full))
        self.stats.client_sets_full = len(full)
        items, totals = self.client_report.increments(rows, time.time())
        try:
            for frame in og_protocol.clients(time.time(), items, bool(full)):
                ws.send(frame)
        except Exception as exc:  # noqa: BLE001 - a closed connection; the session notices it by itself
            log.info("clients frame not sent (%s): reported with the next one", exc.__class__.__name__)
            return
        self.client_report.sent(totals)

    def run(self):
        """Follow the servers until stopped; the rules stay as they are whenever no server answers."""
        self.kernel.ensure_policy()
        self.kernel.restore()
        threading.Thread(target=self.kernel.drift_loop, args=(self.stop,), name="og-drift", daemon=True).start()
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
                     servers[attempt % len(servers)], self.kernel.revision)
            self.stop.wait(delay)
        log.info("stopped at revision %d; the rules stay in place", self.kernel.revision)
