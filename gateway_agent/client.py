"""The agent: restore the last state, then follow the server (docs/protocol.md) for as long as it runs."""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
import uuid

import websocket

from og_kernel.og_command import CommandError
from og_kernel.og_elements import Element, digest
from og_kernel.og_netpolicy import TargetError

from . import __version__, state

log = logging.getLogger("og.agent")

HEARTBEAT_EVERY = 10.0
DEAD_AFTER = 30.0
DRIFT_EVERY = 30.0
COUNTERS_EVERY = 15.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class Stats:
    """What the metrics endpoint reports about the agent itself."""

    def __init__(self):
        self.connected = False
        self.reconnects = 0
        self.skipped_internal = 0
        self.drift_repairs = 0
        self.apply_seconds = []  # observed durations, drained by the metrics collector
        self.policy_ok = False
        self.server = ""


class Agent:
    def __init__(self, cfg, firewall, connect=websocket.create_connection, conntrack=None):
        self.cfg = cfg
        self.fw = firewall
        self.connect = connect
        self.conntrack = conntrack
        self.revision = 0
        self.elements = set()      # canonical texts of what we applied
        self.stats = Stats()
        self.stop = threading.Event()
        self.boot = str(uuid.uuid4())
        self.ws = None
        self._chunks = {}
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
        revision, elements = state.load(self.cfg["state_file"])
        if elements is None:
            log.info("no saved state at %s: starting empty (default deny)", self.cfg["state_file"])
            return
        started = time.monotonic()
        with self.lock:
            self._replace(revision, elements)
        log.info("restored saved state revision=%d elements=%d duration=%.3fs",
                 revision, len(self.elements), time.monotonic() - started)

    def _replace(self, revision, elements):
        parsed = [Element.parse(e) for e in elements]
        skipped = self.fw.replace(parsed)
        self._skipped(skipped, revision)
        self.elements = {e.text for e in parsed} - {e.text for e in skipped}
        self.revision = revision

    def _skipped(self, skipped, revision):
        if skipped:
            self.stats.skipped_internal += len(skipped)
            log.warning("skipped %d element(s) inside internal networks at revision %d: %s",
                        len(skipped), revision, " ".join(sorted(str(e) for e in skipped)[:10]))

    def kernel_digest(self):
        found = self.fw.elements(expected=[Element.parse(e) for e in self.elements])
        return digest(found), len(found), {e.text for e in found}

    def apply_snapshot(self, revision, elements):
        started = time.monotonic()
        with self.lock:
            self._replace(revision, elements)
            state.save(self.cfg["state_file"], self.revision, self.elements)
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied snapshot revision=%d elements=%d duration=%.3fs", revision, len(self.elements), took)

    def apply_delta(self, base, revision, add, remove):
        started = time.monotonic()
        add_e = [Element.parse(e) for e in add]
        remove_e = [Element.parse(e) for e in remove]
        with self.lock:
            skipped = self.fw.update(add=add_e, remove=remove_e)
            self._skipped(skipped, revision)
            self.elements |= {e.text for e in add_e} - {e.text for e in skipped}
            self.elements -= {e.text for e in remove_e}
            self.revision = revision
            state.save(self.cfg["state_file"], self.revision, self.elements)
        if remove_e and self.cfg.get("cut_on_remove", True) and self.conntrack:
            self.conntrack(remove_e)
        took = time.monotonic() - started
        self.stats.apply_seconds.append(took)
        log.info("applied delta %d->%d add=%d remove=%d duration=%.3fs", base, revision, len(add_e), len(remove_e), took)

    def repair_drift(self):
        """Re-apply policy and sets when someone changed them behind our back."""
        with self.lock:
            try:
                if self.fw.plan().changed:
                    self.fw.apply()
                    log.warning("egress policy drifted: re-applied")
                    self.stats.drift_repairs += 1
                _, _, found = self.kernel_digest()
                if found != self.elements:
                    log.warning("allowed sets drifted (kernel %d, expected %d elements): re-applied revision %d",
                                len(found), len(self.elements), self.revision)
                    self._replace(self.revision, sorted(self.elements))
                    self.stats.drift_repairs += 1
                self.stats.policy_ok = True
            except CommandError as exc:
                self.stats.policy_ok = False
                log.error("drift check failed: %s", exc.msg)

    # ---- the connection -------------------------------------------------------------------------
    def send(self, **msg):
        msg["v"] = 1
        self.ws.send(json.dumps(msg, separators=(",", ":")))

    def hello(self):
        d, _, _ = self.kernel_digest()
        self.send(type="hello", name=self.cfg["name"], agent_version=__version__, revision=self.revision, digest=d)

    def ack(self):
        d, count, _ = self.kernel_digest()
        self.send(type="ack", revision=self.revision, digest=d, count=count)

    def handle(self, raw):
        """Apply one server frame; raise ValueError for a frame that breaks the protocol."""
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            raise ValueError("frame is not JSON")
        if not isinstance(msg, dict) or msg.get("v") != 1:
            raise ValueError("frame is not a v1 protocol message")
        kind = msg.get("type")
        try:
            if kind == "snapshot":
                revision, chunk, chunks = int(msg["revision"]), int(msg["chunk"]), int(msg["chunks"])
                if not isinstance(msg["elements"], list) or not 0 <= chunk < chunks:
                    raise ValueError("snapshot chunk %r of %r is malformed" % (chunk, chunks))
                if self._chunks.get("revision") != revision:
                    self._chunks = {"revision": revision, "parts": {}}
                self._chunks["parts"][chunk] = msg["elements"]
                if len(self._chunks["parts"]) == chunks:
                    elements = [e for i in range(chunks) for e in self._chunks["parts"][i]]
                    self._chunks = {}
                    self.apply_snapshot(revision, elements)
                    self.ack()
            elif kind == "delta":
                base, revision = int(msg["base"]), int(msg["revision"])
                add, remove = msg["add"], msg["remove"]
                if not isinstance(add, list) or not isinstance(remove, list):
                    raise ValueError("delta add and remove must be lists")
                if base != self.revision:
                    log.info("delta base %d does not match applied revision %d: asking again", base, self.revision)
                    self.hello()
                    return
                if revision != base or add or remove:
                    self.apply_delta(base, revision, add, remove)
                self.ack()
            elif kind == "heartbeat":
                pass
            elif kind == "error":
                log.error("server refused us: %s: %s", msg.get("code"), msg.get("message"))
            else:
                raise ValueError("unknown message type %r" % (kind,))
        except (KeyError, TypeError, TargetError) as exc:
            raise ValueError("malformed %s: %s" % (kind, exc))

    def session(self, url):
        """One connection: hello, then frames until it breaks. Returns when the connection ends."""
        headers = ["Authorization: Bearer " + self.cfg["token"]]
        sslopt = {"ca_certs": self.cfg["ca_file"]} if self.cfg.get("ca_file") else {"cert_reqs": ssl.CERT_REQUIRED}
        self.ws = self.connect(url, header=headers, timeout=10, sslopt=sslopt if url.startswith("wss") else None)
        self.ws.settimeout(1.0)
        self.stats.connected = True
        self.stats.server = url
        log.info("connected to %s at revision %d", url, self.revision)
        try:
            self.hello()
            last_heard = last_beat = last_drift = last_counters = time.monotonic()
            while not self.stop.is_set():
                try:
                    raw = self.ws.recv()
                    if raw in (None, ""):
                        raise websocket.WebSocketConnectionClosedException("closed by the server")
                    last_heard = time.monotonic()
                    try:
                        self.handle(raw)
                    except ValueError as exc:
                        log.error("ignored a bad frame from the server: %s", exc)
                except websocket.WebSocketTimeoutException:
                    pass
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_EVERY:
                    self.send(type="heartbeat", ts=time.time())
                    last_beat = now
                if now - last_drift >= DRIFT_EVERY:
                    self.repair_drift()
                    last_drift = now
                if now - last_counters >= COUNTERS_EVERY:
                    self.send_counters()
                    last_counters = now
                if now - last_heard > DEAD_AFTER:
                    log.warning("no frame from %s for %ds: reconnecting", url, DEAD_AFTER)
                    return
        finally:
            self.stats.connected = False
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail any way
                pass

    def send_counters(self):
        with self.lock:
            counters = self.fw.counters([Element.parse(e) for e in self.elements])
        self.send(type="counters", ts=time.time(), boot=self.boot,
                  counters={str(k): v.as_dict() for k, v in counters.items()})

    def run(self):
        """Follow the servers until stopped; the rules stay as they are whenever no server answers."""
        self.ensure_policy()
        self.restore()
        backoff = BACKOFF_MIN
        attempt = 0
        while not self.stop.is_set():
            url = self.cfg["servers"][attempt % len(self.cfg["servers"])]
            attempt += 1
            started = time.monotonic()
            try:
                self.session(url)
            except Exception as exc:  # any failure: keep the rules, wait, try the next server
                log.warning("connection to %s failed: %s", url, exc.__class__.__name__ + ": " + str(exc)[:200])
            if self.stop.is_set():
                break
            self.stats.reconnects += 1
            if time.monotonic() - started > 60:
                backoff = BACKOFF_MIN  # the session was healthy for a while: start over
            delay = random.uniform(0, backoff)  # full jitter
            backoff = min(backoff * 2, BACKOFF_MAX)
            log.info("reconnecting in %.1fs", delay)
            self.stop.wait(delay)


def cut_connections(elements, run=None):
    """Delete conntrack entries towards removed destinations, so established flows end too."""
    from og_kernel.og_command import CommandRunner
    run = run or CommandRunner()
    for element in elements:
        net = element.network
        base = ["conntrack", "-D", "-d", str(net.network_address)]
        if net.prefixlen != net.max_prefixlen:
            base += ["--mask-dst", str(net.netmask)]
        if net.version == 6:
            base[1:1] = ["-f", "ipv6"]
        if element.port:
            proto, first, last = element.proto_ports
            ports = range(first, last + 1) if last - first < 64 else [None]
            for port in ports:
                run(base + ["-p", proto] + (["--dport", str(port)] if port else []), check=False)
        else:
            run(base, check=False)
