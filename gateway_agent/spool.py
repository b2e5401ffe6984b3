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

from og_kernel import og_protocol

log = logging.getLogger("og.agent")

IN_FLIGHT = 8     # learned frames sent and not yet acknowledged, at most


def _order(name):
    """learned-<ms>-<pid>-<seq>.json sorts by its numbers (oldest first); any other name sorts last."""
    try:
        return (0, [int(x) for x in name[len("learned-"):-len(".json")].split("-")])
    except ValueError:
        return (1, [name])


class SpoolSender(object):
    def __init__(self, directory):
        self.directory = directory
        self.in_flight = set()
        self.sent = 0
        self.acked = 0
        self.refused = 0

    def reset(self):
        """A new session: what was in flight is sent again."""
        self.in_flight = set()

    def files(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted((n for n in names if n.startswith("learned-") and n.endswith(".json")), key=_order)

    def frames(self):
        """The learned frames to send now (oldest files first, at most IN_FLIGHT unacknowledged)."""
        out = []
        for name in self.files():
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
            self.sent += 1
            out.append(frame)
        return out

    def ack(self, batch):
        """The server stored `batch`: delete its file (an ack of a file already gone is fine)."""
        self.in_flight.discard(batch)
        self.acked += 1
        self._remove(batch)

    def _remove(self, name):
        try:
            os.unlink(os.path.join(self.directory, os.path.basename(name)))
        except FileNotFoundError:
            pass
