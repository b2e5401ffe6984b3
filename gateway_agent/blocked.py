"""The attempts the gateway refused (or let through in observe mode), as increments for the server's Blocked page.

The kernel's og-blocked and og-observed sets (docs/kernel-interface.md) hold, per (client, destination,
protocol:port), the attempts since the element's first one, with the seconds since then. The agent reads them on
its counters cycle and sends what grew since the last frame it sent (docs/protocol.md, "blocked").
"""

from __future__ import annotations

from og_kernel import og_protocol


class BlockedReport:
    """What was reported of each recorded attempt, and the increments to report next."""

    def __init__(self):
        self.reported = {}   # Attempt.key -> (packets, bytes, first) at the last frame sent

    def increments(self, attempts, now):
        """(og_protocol.Attempt list of what grew since the last report, the totals to remember once sent).

        An element whose packets went down, or whose first attempt moved by more than a few seconds, expired and
        was recorded anew: all of it is new. `last` is the time of this read (the attempt happened since the
        previous one, one counters interval at most)."""
        now = int(now)
        items, totals = [], {}
        for attempt in attempts:
            first = now - attempt.age
            before = self.reported.get(attempt.key)
            if before is not None and attempt.packets >= before[0] and abs(first - before[2]) <= 5:
                count, size, first = attempt.packets - before[0], attempt.bytes - before[1], before[2]
            else:
                count, size = attempt.packets, attempt.bytes
            totals[attempt.key] = (attempt.packets, attempt.bytes, first)
            if count > 0:
                items.append(og_protocol.Attempt(attempt.client, attempt.destination, attempt.proto, attempt.port,
                                                 count, max(0, size), first, now, attempt.observed))
        return items, totals

    def sent(self, totals):
        self.reported = totals
