"""Traffic per client address, as increments for the server's traffic history (docs/protocol.md, "clients").

The kernel's og-perclient sets (docs/kernel-interface.md) hold, per client address and direction, the bytes and
packets since the element's first packet, with the seconds since then. The agent reads them on its counters cycle
and sends what grew since the last frame it sent.
"""

from __future__ import annotations

from og_kernel import og_protocol

# An element whose first packet moved by more than this many seconds expired and was created anew (the kernel
# reports whole seconds of timeout left, read at slightly different moments).
SAME_FIRST = 5


class ClientReport:
    """What was reported of each client's two directions, and the increments to report next."""

    def __init__(self):
        self.reported = {}   # client -> ((bytes, packets, first) out, (bytes, packets, first) in), None: not counted

    def increments(self, rows, now):
        """(og_protocol.ClientUse list of what grew since the last report, the totals to remember once sent).

        `rows` are og_firewall.ClientCounters. A direction whose counters went down, or whose first packet moved,
        expired and was counted anew: all of it is new (what it carried between the last read and its expiry is
        lost, one counters interval at most)."""
        now = int(now)
        items, totals = [], {}
        for row in rows:
            before = self.reported.get(row.client, (None, None))
            now_out = None if row.out_age is None else (row.out_bytes, row.out_packets, now - row.out_age)
            now_in = None if row.in_age is None else (row.in_bytes, row.in_packets, now - row.in_age)
            out_b, out_p, first_out = _grown(now_out, before[0])
            in_b, in_p, first_in = _grown(now_in, before[1])
            totals[row.client] = (None if now_out is None else (row.out_bytes, row.out_packets, first_out),
                                  None if now_in is None else (row.in_bytes, row.in_packets, first_in))
            if out_b or out_p or in_b or in_p:
                items.append(og_protocol.ClientUse(row.client, out_b, out_p, in_b, in_p))
        return items, totals

    def sent(self, totals):
        self.reported = totals


def _grown(now, before):
    """(bytes, packets, first) grown in one direction since `before` (the totals at the last report)."""
    if now is None:
        return 0, 0, None
    size, count, first = now
    if before is not None and count >= before[1] and size >= before[0] and abs(first - before[2]) <= SAME_FIRST:
        return size - before[0], count - before[1], before[2]
    return size, count, first
