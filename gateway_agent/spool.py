"""The agent's side of og-dns's spool (docs/dns.md, "Fleet-wide learning"): each spool file, oldest first, goes
to a server that announced og_protocol.FEATURE_LEARNED as one learned frame, and is deleted on its learned_ack.

Delivery is at least once: a file whose ack did not come before the session ended is sent again in the next
session. Without a server the files stay (og-dns bounds how many), so nothing learned is lost while the
gateway runs fail-static.
"""

from __future__ import annotations

import json
import logging
import os
import time

from og_kernel import og_protocol

from .dns.spool import spool_files

log = logging.getLogger("og.agent")

IN_FLIGHT = 8     # learned frames sent and not yet acknowledged, at most
LOOK_EVERY = 1.0  # seconds between two listings of the spool (og-dns writes at most a file a second)


class SpoolSender(object):
    def __init__(self, directory, clock=time.monotonic):
        self.directory = directory
        self.clock = clock
        self.next_look = 0.0   # the agent asks after every frame it receives: the directory is listed at most
        #                        once a second, or at once when an ack or a new session freed a slot
        self.in_flight = set()
        self.refused = 0   # files removed unsent because no server would accept them

    def reset(self):
        """A new session: what was in flight is sent again."""
        self.in_flight = set()
        self.next_look = 0.0

    def frames(self):
        """The learned frames to send now (oldest files first, at most IN_FLIGHT unacknowledged)."""
        now = self.clock()
        if now < self.next_look or len(self.in_flight) >= IN_FLIGHT:
            return []
        self.next_look = now + LOOK_EVERY
        out = []
        for name in spool_files(self.directory):
            if len(self.in_flight) >= IN_FLIGHT:
                break
            if name in self.in_flight:
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as fh:
                    body = json.load(fh)
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
                frame = og_protocol.learned(name, body)
            except FileNotFoundError:
                continue
            except (ValueError, OSError) as exc:
                # A file no server would accept stays a file no server accepts: drop it, say so.
                log.error("spool file %s is not a valid og-dns spool file (%s): removed without sending", path, exc)
                self.refused += 1
                self._remove(name)
                continue
            self.in_flight.add(name)
            out.append(frame)
        return out

    def ack(self, batch):
        """The server stored `batch`: delete its file (an ack of a file already gone is fine)."""
        self.in_flight.discard(batch)
        self.next_look = 0.0
        self._remove(batch)

    def _remove(self, name):
        try:
            os.unlink(os.path.join(self.directory, os.path.basename(name)))
        except FileNotFoundError:
            pass
