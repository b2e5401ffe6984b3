"""The gateway WebSocket (docs/protocol.md): hello, then snapshot or delta, then deltas as they come."""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import time

from flask import current_app, g, request
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import IntegrityError

from og_kernel import og_protocol
from og_kernel.og_protocol import ProtocolError

from ..errors import error
from ..models import db, utcnow
from ..services import blocked, changelog, entries, gateways, learned, tokens
from ..services.traffic import Traffic, TrafficError

log = logging.getLogger(__name__)

DEAD_AFTER = gateways.DEAD_AFTER
CLOSE_WAIT = 1.0           # seconds a stopping server waits for the agent to answer its close frame
# What this server speaks beyond the base protocol, announced in every snapshot chunk and delta.
FEATURES = (og_protocol.FEATURE_DOMAINS, og_protocol.FEATURE_LEARNED, og_protocol.FEATURE_DIFFERS,
            og_protocol.FEATURE_BLOCKED, og_protocol.FEATURE_CLIENTS)
# Seconds a replica reuses its read of the domain entries. A new domain entry need not take a revision (it has
# no address before it resolves) and may be committed by another replica, so sessions that follow domains
# re-read them this often (one query per replica, shared by all its sessions) as well as at every revision.
DOMAINS_EVERY = 1.0


_frames = collections.OrderedDict()
_frames_lock = threading.Lock()


_snapshots = {}
_snapshots_lock = threading.Lock()


def snapshot_frames():
    """(revision, [JSON text of each chunk], element count) of the published set now; built once per revision
    and database, so a thousand gateways reconnecting at once cost one read and one encoding."""
    key = str(db.engine.url)
    with _snapshots_lock:
        head = changelog.head_revision()
        cached = _snapshots.get(key)
        if cached is None or cached[0] != head:
            revision, elements = changelog.snapshot()
            frames = og_protocol.snapshot(revision, elements, changelog.names(), FEATURES)
            cached = _snapshots[key] = (revision, frames, len(elements))
        db.session.commit()
        return cached


def _delta(base, head):
    """The delta frame from base to head as JSON text, or None when the log can't reach back (caller commits)."""
    answer = changelog.delta(base, head)
    if answer is None:
        return None
    add, remove, aged = answer
    named = sorted(set(add) | set(changelog.renamed(base, head)))
    return og_protocol.delta(base, head, add, remove, aged, changelog.names(named) if named else {}, FEATURES)


_domains = {}
_domains_lock = threading.Lock()


def domains_frame(head):
    """(digest, JSON text) of the domains frame at revision `head` (the caller's, from the hub: no query): the
    domain entries read at most once per revision and per DOMAINS_EVERY seconds per database, however many
    sessions ask; a session compares the digest with the one it sent last and sends the frame only when they
    differ."""
    key = str(db.engine.url)
    with _domains_lock:
        now = time.monotonic()
        cached = _domains.get(key)
        if cached is None or cached[1] != head or now - cached[0] >= DOMAINS_EVERY:
            digest, items = entries.domains_view()
            db.session.commit()
            if cached is not None and cached[2] == digest:
                cached = _domains[key] = (now, head, digest, cached[3])   # unchanged: keep its revision
            else:
                cached = _domains[key] = (now, head, digest, og_protocol.domains(head, items))
        return cached[2], cached[3]


def delta_frame(base, head):
    """The delta frame from base to head as JSON text, or None when the log can't reach back.

    Every gateway at the same revision gets the same frame: it is built once (one database read, one JSON
    encoding) however many gateways are connected, and kept for the last 64 (base, head) pairs."""
    key = (str(db.engine.url), base, head)   # one process may serve several databases (tests)
    with _frames_lock:
        if key in _frames:
            _frames.move_to_end(key)
            return _frames[key]
        frame = _delta(base, head)
        db.session.commit()
        _frames[key] = frame
        while len(_frames) > 64:
            _frames.popitem(last=False)
        return frame


class GatewaySession:
    """One connected gateway."""

    def __init__(self, ws, hub):
        self.ws = ws
        self.hub = hub
        self.name = None
        self.session = None    # this session's id in the gateway's row (services/gateways.py)
        self.sent = 0          # the revision the gateway will be at once it applies what we sent
        self.resent_at = None  # the revision a snapshot was resent at because of a digest mismatch
        self.acked = 0         # the newest revision acknowledged in this session
        self.holding = None    # what the gateway said it holds (None: it did not say; compared with everything)
        self.features = ()     # what the agent's hello said it speaks (FEATURE_DOMAINS: send it domains frames)
        self.domains_sent = None   # the digest of the domain entries this session sent last
        self.domains_checked = 0.0
        self.mode = None       # what the agent runs: its hello's mode, then what we sent it
        self.last_heard = time.monotonic()
        self.last_beat = time.monotonic()

    def run(self):
        wake = self.ws.event.set
        self.hub.listeners.add(wake)   # the hub's shutdown wakes this session wherever it waits
        try:
            raw = self.receive_hello()
            if raw is None:
                return self.going_away()
            frame = og_protocol.parse_agent_frame(raw)
            if not isinstance(frame, og_protocol.Hello):
                raise ProtocolError("the first frame must be hello, not %s" % frame.TYPE)
            self.hello(frame)
            self._loop()
        except ProtocolError as exc:
            log.warning("gateway %s protocol error %s: %s", self.name or request.remote_addr, exc.code, exc.message)
            try:
                self.ws.send(og_protocol.error(exc.code, exc.message))
                self.ws.close(og_protocol.CLOSE_POLICY, exc.message[:120])
            except ConnectionClosed:
                pass
        except ConnectionClosed:
            pass
        except Exception:
            # E.g. the database went away mid-session. Close the WebSocket properly (1011): an exception that
            # escaped this view would make Flask write an HTTP error response into the open WebSocket stream.
            log.exception("gateway %s session failed: closing", self.name or request.remote_addr)
            try:
                db.session.rollback()
                self.ws.close(og_protocol.CLOSE_SERVER_ERROR, "server error; reconnect")
            except Exception:  # noqa: BLE001 - the connection or the database may be gone as well
                pass
        finally:
            self.hub.listeners.discard(wake)
            self.disconnected()

    def receive_hello(self):
        """The first frame, within og_protocol.HELLO_TIMEOUT; None when the server began stopping first."""
        deadline = time.monotonic() + og_protocol.HELLO_TIMEOUT
        while not self.hub.stopping.is_set():
            if self.ws.input_buffer:
                return self.ws.receive(timeout=0)
            if not self.ws.connected:
                raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("no hello within %ds" % og_protocol.HELLO_TIMEOUT, og_protocol.TIMEOUT)
            # ws.receive() would sleep through the hub's wake-up; this wait ends on it (or on a frame).
            self.wait(timeout=left)
        return None

    def going_away(self):
        """The server is stopping: say so (1001), so the agent reconnects at once instead of backing off."""
        log.info("gateway %s: server stopping, closing the session (1001)", self.name or request.remote_addr)
        self.ws.close(og_protocol.CLOSE_GOING_AWAY, "server stopping; reconnect")
        # The agent answers the close and hangs up; a peer that doesn't must not hold the stopping worker.
        self.ws.thread.join(timeout=CLOSE_WAIT)
        if self.ws.thread.is_alive():
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hello(self, frame):
        """The first hello: open the gateway's session and answer with a delta or a snapshot."""
        self.holding = frame.holding
        self.features = frame.features
        self.name = frame.name
        address = request.remote_addr or ""
        holds = json.dumps(self.holding.to_wire(), separators=(",", ":")) if self.holding else ""
        self.mode = frame.mode
        self.session = gateways.open_session(frame.name, address, frame.agent_version, self.hub.replica, holds,
                                             frame.mode or "")
        log.info("gateway %s connected from %s at revision %d", frame.name, address, frame.revision)
        self.catch_up(frame.revision, frame.digest)

    def catch_up(self, revision, digest=None):
        head = changelog.head_revision()
        frame = _delta(revision, head) if 0 < revision <= head else None
        reason = "first" if revision == 0 else "log"
        if frame is not None and digest is not None and changelog.digest_at(revision, self.holding) != digest:
            # The gateway's kernel is not what that revision published (drift, restored old state): resend all.
            log.info("gateway %s digest differs from revision %d: snapshot", self.name, revision)
            frame, reason = None, "digest_differs"
        # Give the connection back first: before queueing for the snapshot lock, a thousand gateways
        # reconnecting at once would otherwise each hold a pooled connection while they wait, and exhaust the pool.
        db.session.commit()
        if frame is not None:
            self.ws.send(frame)
            self.sent = head
        else:
            self.send_snapshot(reason)
        self.send_domains(max(head, self.sent))
        self.send_mode()

    def send_mode(self):
        """To an agent that announced FEATURE_MODE: the mode set through the API, when it differs from what the
        agent runs (an agent without the feature keeps its own mode; the fleet shows both)."""
        if og_protocol.FEATURE_MODE not in self.features:
            return
        wanted = gateways.cached_modes(DOMAINS_EVERY).get(self.name)
        if wanted and wanted != self.mode:
            self.ws.send(og_protocol.mode(wanted))
            self.mode = wanted
            self.hub.record_gateway(self.name, self.session, running_mode=wanted)
            log.info("gateway %s sent mode %s", self.name, wanted)

    def send_domains(self, head):
        """To an agent that announced FEATURE_DOMAINS: the domain entries, when they differ from what it was sent
        last in this session (a new session sends them once, after its snapshot or first delta)."""
        if og_protocol.FEATURE_DOMAINS not in self.features:
            return
        self.domains_checked = time.monotonic()
        digest, frame = domains_frame(head)
        if digest != self.domains_sent:
            self.ws.send(frame)
            self.domains_sent = digest
            log.info("gateway %s sent domains digest=%s", self.name, digest[:12])

    def send_snapshot(self, reason):
        """Send the whole published set; reason (first, log, digest_differs, ack_mismatch) is counted."""
        revision, frames, count = snapshot_frames()
        for frame in frames:
            self.ws.send(frame)
        self.sent = revision
        counter = current_app.extensions.get("og_snapshots_sent")
        if counter is not None:
            counter.labels(self.name, reason).inc()
        log.info("gateway %s sent snapshot revision=%d elements=%d reason=%s", self.name, revision, count, reason)

    def wait(self, timeout):
        """Sleep until a frame arrives or the hub announces a revision (both set the connection's event)."""
        if not self.ws.input_buffer:
            self.ws.event.wait(timeout)
        self.ws.event.clear()

    def _loop(self):
        while True:
            self.wait(timeout=1.0)
            if self.hub.stopping.is_set():
                return self.going_away()
            head = self.hub.revision
            if head > self.sent:
                frame = delta_frame(self.sent, head)
                if frame is None:
                    self.send_snapshot("log")
                else:
                    self.ws.send(frame)
                    self.sent = head
                self.send_domains(head)
            elif time.monotonic() - self.domains_checked >= DOMAINS_EVERY:
                self.send_domains(head)
                self.send_mode()
            while self.ws.input_buffer:
                raw = self.ws.receive(timeout=0)
                if raw is None:
                    break
                self.last_heard = time.monotonic()
                self.handle(og_protocol.parse_agent_frame(raw))
            if not self.ws.connected:
                raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
            now = time.monotonic()
            if now - self.last_beat >= og_protocol.HEARTBEAT_EVERY:
                self.ws.send(og_protocol.heartbeat(time.time()))
                self.last_beat = now
            if now - self.last_heard > DEAD_AFTER:
                log.warning("gateway %s silent for %ds: closing", self.name, DEAD_AFTER)
                self.ws.close(og_protocol.CLOSE_GOING_AWAY, "no heartbeat")
                return

    def handle(self, frame):
        """One frame after the first hello, parsed by og_protocol."""
        if isinstance(frame, og_protocol.Hello):
            if frame.features:
                self.features = frame.features
            if frame.mode:
                self.mode = frame.mode
                self.hub.record_gateway(self.name, self.session, running_mode=frame.mode)
            if frame.holding is not None:
                self.holding = frame.holding
                self.hub.record_gateway(self.name, self.session,
                                        holds=json.dumps(self.holding.to_wire(), separators=(",", ":")))
            self.catch_up(frame.revision, frame.digest)
        elif isinstance(frame, og_protocol.Ack):
            self.acknowledged(frame)
        elif isinstance(frame, og_protocol.Heartbeat):
            self.hub.record_gateway(self.name, self.session, last_seen=utcnow())
        elif isinstance(frame, og_protocol.Counters):
            try:
                current_app.extensions["og_traffic"].ingest(self.name, vars(frame))
            except TrafficError as exc:
                raise ProtocolError(str(exc)) from None
        elif isinstance(frame, og_protocol.Learned):
            # Stored in one transaction (a resent batch adds no revision), then acknowledged. A write race lost
            # twice leaves it unacknowledged: the agent sends it again in its next session.
            try:
                result = learned.apply(self.name, frame, current_app.config["OG"])
            except IntegrityError as exc:
                db.session.rollback()
                log.warning("gateway %s learned batch %s not stored (write race): %s", self.name, frame.batch,
                            exc.orig)
            else:
                counter = current_app.extensions.get("og_unlisted_queries")
                if counter is not None and result["unlisted"]:
                    counter.labels(gateway=self.name).inc(result["unlisted"])
                self.ws.send(og_protocol.learned_ack(frame.batch))
        elif isinstance(frame, og_protocol.Blocked):
            # Fire and forget, like counters: what a lost frame carried is not sent again.
            blocked.ingest(self.name, frame)
        elif isinstance(frame, og_protocol.Clients):
            try:
                current_app.extensions["og_traffic"].ingest_clients(self.name, frame)
            except TrafficError as exc:
                raise ProtocolError(str(exc)) from None
        else:
            # The agent refused a frame of ours and closes the connection (1008) after this one.
            log.warning("gateway %s refused a frame: %s: %s", self.name, frame.code, frame.message)

    def acknowledged(self, frame):
        revision, digest = frame.revision, frame.digest
        if revision > self.sent:
            raise ProtocolError("ack of revision %d that was never sent (latest sent %d)" % (revision, self.sent))
        if revision < self.acked:
            log.warning("gateway %s replayed an ack of revision %d after %d: ignored", self.name, revision,
                        self.acked)
            return
        newly = revision > self.acked
        self.acked = revision
        head, expected = self.hub.held_digest(self.holding, revision)
        # Recorded in memory; the hub writes every gateway's state in one transaction a few times a
        # second (one write per ack would serialise a thousand gateways on the database).
        # differs: what its kernel lacks or holds beyond its applied set, as the agent read it back ("" when
        # the agent does not say: the fleet view then gives the counts only).
        self.hub.record_gateway(self.name, self.session, applied_revision=revision, digest=digest, elements=frame.count,
                                digest_match=revision == head and digest == expected, last_seen=utcnow(),
                                kernel_diff="" if frame.differs is None else json.dumps(
                                    frame.differs, separators=(",", ":"), sort_keys=True))
        if newly:
            self._observe_latency(revision)
        if revision == head and digest != expected:
            if self.resent_at == revision:
                # A snapshot did not help (the gateway skips elements, e.g. its internal networks differ):
                # the fleet view shows the mismatch; resending would only loop.
                log.warning("gateway %s still differs at revision %d after a snapshot; not resending",
                            self.name, revision)
            else:
                log.warning("gateway %s digest mismatch at revision %d: sending a snapshot", self.name, revision)
                self.resent_at = revision
                self.send_snapshot("ack_mismatch")

    def _observe_latency(self, revision):
        """Commit-to-ack time of the acked revision (skipped for old revisions, e.g. after a reconnect)."""
        at = self.hub.committed_at(revision)
        if at is not None:
            seconds = (utcnow() - at).total_seconds()
            if 0 <= seconds < 300:
                current_app.extensions["og_publish_latency"].observe(seconds)

    def disconnected(self):
        if self.session is None:
            return
        try:
            gateways.close_session(self.name, self.session)
        except Exception:
            db.session.rollback()
            log.exception("could not record the disconnect of gateway %s", self.name)
        log.info("gateway %s disconnected", self.name)


def register(app, sock):
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"max_message_size": og_protocol.MAX_MESSAGE})
    app.extensions.setdefault("og_traffic", Traffic())

    @sock.route("/ws/gateway")
    def gateway_ws(ws):
        app.extensions["og_hub"].start()
        GatewaySession(ws, app.extensions["og_hub"]).run()
        db.session.remove()

    @app.before_request
    def authenticate_gateway():
        if request.path != "/ws/gateway":
            return None
        token = tokens.authenticate(request.headers.get("Authorization"))
        if not tokens.allowed(token, "gateway"):
            return error(401, "unauthorized", "a gateway token is required: Authorization: Bearer <token>")
        client_ca = current_app.config["OG"].get("tls_client_ca_file")
        if client_ca and not peer_certificate(request.environ):
            log.warning("gateway connection from %s refused: no client certificate (tls_client_ca_file is set)",
                        request.remote_addr)
            return error(403, "client_certificate_required",
                         "this server requires gateways to present a client certificate signed by its "
                         "tls_client_ca_file %s: set client_cert_file and client_key_file in the agent's settings"
                         % client_ca)
        g.token = token
        return None


def peer_certificate(environ):
    """The client certificate the TLS handshake verified (a dict), or None: none was presented (or no TLS)."""
    sock = environ.get("gunicorn.socket")
    if not hasattr(sock, "getpeercert"):   # plain HTTP
        return None
    try:
        return sock.getpeercert() or None
    except ValueError:   # not connected, or the handshake is not done
        return None
