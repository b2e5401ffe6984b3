"""The agent's frame handling: each server frame, parsed by og_protocol, into kernel work and the replies."""

from __future__ import annotations

import logging
import time

from og_kernel import og_protocol
from og_kernel.og_command import CommandError
from og_kernel.og_elements import Holding

from . import __version__
from .domains import DomainsFile
from .spool import SpoolSender

log = logging.getLogger("og.agent")


class Follower:
    """Follows the server's frames: assembles snapshot chunks, applies snapshots and deltas through the kernel,
    and builds the hello and ack frames (docs/protocol.md)."""

    def __init__(self, cfg, kernel):
        self.cfg = cfg
        self.kernel = kernel
        self._chunks = None   # ((revision, chunks), {chunk: elements}, names) of a snapshot being received
        # The domains file for og-dns; with none configured the agent does not announce FEATURE_DOMAINS, and the
        # server sends it no domains frames.
        path = cfg.get("dns_domains_file")
        self.domains = DomainsFile(path) if path else None
        # FEATURE_DIFFERS: its acks say what its kernel lacks or holds beyond what it applied (docs/protocol.md);
        # FEATURE_MODE: the server may send mode frames (enforce/observe); FEATURE_BLOCKED: we report attempts;
        # FEATURE_CLIENTS: we report traffic per client address.
        self.features = ((og_protocol.FEATURE_DOMAINS,) if self.domains else ()) + (
            og_protocol.FEATURE_DIFFERS, og_protocol.FEATURE_MODE, og_protocol.FEATURE_BLOCKED,
            og_protocol.FEATURE_CLIENTS)
        # og-dns's spool: sent as learned frames to a server that announced FEATURE_LEARNED.
        spool_dir = cfg.get("dns_spool_dir")
        self.spool = SpoolSender(spool_dir) if spool_dir else None
        self.server_features = ()

    def reset(self):
        """A new connection: chunks of a snapshot never span connections, nor do unacknowledged spool files."""
        self._chunks = None
        self.server_features = ()
        if self.spool is not None:
            self.spool.reset()

    def learned(self):
        """The learned frames to send now: none until the server announced FEATURE_LEARNED in this session."""
        if self.spool is None or og_protocol.FEATURE_LEARNED not in self.server_features:
            return []
        return self.spool.frames()

    def sends_blocked(self):
        """True once the server announced FEATURE_BLOCKED in this session: blocked frames go to it."""
        return og_protocol.FEATURE_BLOCKED in self.server_features

    def sends_clients(self):
        """True once the server announced FEATURE_CLIENTS in this session: clients frames go to it."""
        return og_protocol.FEATURE_CLIENTS in self.server_features

    def holding(self):
        """What this gateway holds of the published set: its families, outside its own internal networks."""
        policy = self.kernel.fw.policy
        return Holding(policy.versions, [str(n) for n in policy.address_policy.internal])

    def hello(self):
        digest, _count = self.kernel.kernel_digest()
        # holds: the server filters the published set the same way, so an element we skip costs no snapshot.
        return og_protocol.hello(self.cfg["name"], __version__, self.kernel.revision, digest, self.holding(),
                                 self.features, self.kernel.fw.policy.mode)

    def ack(self, result=None):
        digest, count = result or self.kernel.kernel_digest()
        differs = self.kernel.differs if og_protocol.FEATURE_DIFFERS in self.server_features else None
        return og_protocol.ack(self.kernel.revision, digest, count, differs)

    def handle(self, raw):
        """The frames to send in answer to one server frame; raises og_protocol.ProtocolError for a frame that
        breaks the protocol (nothing of it is applied then)."""
        frame = og_protocol.parse_server_frame(raw)
        stats = self.kernel.stats
        stats.last_contact = time.time()
        if isinstance(frame, (og_protocol.Snapshot, og_protocol.Delta)):
            self.server_features = frame.features
        if isinstance(frame, og_protocol.LearnedAck):
            if self.spool is not None:
                self.spool.ack(frame.batch)
            return []
        if isinstance(frame, og_protocol.Snapshot):
            stats.server_revision = max(stats.server_revision, frame.revision)
            return self._snapshot(frame)
        if isinstance(frame, og_protocol.Delta):
            stats.server_revision = max(stats.server_revision, frame.revision)
            return self._delta(frame)
        if isinstance(frame, og_protocol.Domains):
            self._domains(frame)
            return []
        if isinstance(frame, og_protocol.Mode):
            try:
                self.kernel.set_mode(frame.mode)
            except CommandError as exc:
                # The chain stays as it was; the server sends the mode again in the next session.
                log.error("gateway mode %s not applied: %s", frame.mode, exc.msg)
            return []
        if isinstance(frame, og_protocol.Error):
            log.error("server refused us: %s: %s", frame.code, frame.message[:300])
        return []

    def _domains(self, frame):
        if self.domains is None:
            # The server sent what we did not ask for: nothing to write it to; the session goes on.
            log.warning("domains frame at revision %d ignored: no dns_domains_file configured", frame.revision)
            return
        try:
            self.domains.write(frame)
        except OSError as exc:
            # og-dns keeps the file it has; the next domains frame (or the next session's) tries again.
            log.error("domains file %s not written: %s; og-dns keeps the previous one", self.domains.path, exc)
            self.domains.written = None

    def _snapshot(self, frame):
        key = (frame.revision, frame.chunks)
        if self._chunks is None or self._chunks[0] != key:
            self._chunks = (key, {}, {})
        _key, parts, names = self._chunks
        parts[frame.chunk] = frame.elements
        names.update(frame.names)
        if len(parts) < frame.chunks:
            return []
        self._chunks = None
        elements = [e for i in range(frame.chunks) for e in parts[i]]
        return [self.ack(self.kernel.apply_snapshot(frame.revision, elements, names=names))]

    def _delta(self, frame):
        if frame.base != self.kernel.revision:
            log.info("delta %d->%d does not start at applied revision %d: not applied, asking again",
                     frame.base, frame.revision, self.kernel.revision)
            return [self.hello()]
        if frame.revision == frame.base and not frame.add and not frame.remove:
            return [self.ack()]
        return [self.ack(self.kernel.apply_delta(frame.base, frame.revision, frame.add, frame.remove, frame.aged,
                                                 names=frame.names))]
