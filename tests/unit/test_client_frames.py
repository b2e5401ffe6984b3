"""The clients frame of og_protocol (each field checked, built only if a peer would take it) and the agent's
ClientReport, which turns the kernel's per-client running counts into increments (docs/protocol.md, "clients")."""

import json

import pytest

from gateway_agent.clients import ClientReport
from og_kernel import og_protocol
from og_kernel.og_firewall import ClientCounters

ITEM = {"client": "10.88.0.2", "out_bytes": 420, "out_packets": 7, "in_bytes": 300000, "in_packets": 9}


def test_a_clients_frame_round_trips_and_splits_at_the_limit():
    frames = og_protocol.clients(1795000000.5, [ITEM] * (og_protocol.MAX_CLIENTS + 1), full=True)
    assert len(frames) == 2
    assert og_protocol.parse_agent_frame(frames[1]) == og_protocol.Clients(
        (og_protocol.ClientUse(**ITEM),), True, 1795000000.5)
    assert len(og_protocol.parse_agent_frame(frames[0]).clients) == og_protocol.MAX_CLIENTS
    # Nothing counted: one empty frame still says whether a set is full.
    assert [og_protocol.parse_agent_frame(f) for f in og_protocol.clients(5.0, [], full=True)] == [
        og_protocol.Clients((), True, 5.0)]


@pytest.mark.parametrize("change, message", [
    ({"client": ""}, "clients client must be an IP address such as \"10.88.0.2\", not ''"),
    ({"out_bytes": -1}, "clients out_bytes of 10.88.0.2 must be a whole number within 0-2^62, not -1"),
    ({"in_packets": True}, "clients in_packets of 10.88.0.2 must be a whole number within 0-2^62, not True"),
    ({"in_bytes": 1 << 62}, "clients in_bytes of 10.88.0.2 must be a whole number within 0-2^62, not %d" % (1 << 62)),
])
def test_a_bad_client_is_refused_naming_the_field(change, message):
    raw = json.dumps({"v": 1, "type": "clients", "clients": [dict(ITEM, **change)]})
    with pytest.raises(og_protocol.ProtocolError) as exc:
        og_protocol.parse_agent_frame(raw)
    assert str(exc.value) == message
    with pytest.raises(og_protocol.ProtocolError):
        og_protocol.clients(1.0, [dict(ITEM, **change)])   # nor built: an agent never sends what a server refuses


def test_the_frame_itself_is_checked():
    for fields, message in (({"clients": {}}, "clients clients must be a list of at most 5000 objects, not {}"),
                            ({"clients": [], "full": "yes"}, "clients full must be true or false, not 'yes'"),
                            ({"clients": [], "ts": "now"}, "clients ts must be a number (epoch seconds), not 'now'")):
        with pytest.raises(og_protocol.ProtocolError) as exc:
            og_protocol.parse_agent_frame(json.dumps(dict({"v": 1, "type": "clients"}, **fields)))
        assert str(exc.value) == message


def test_the_report_sends_what_grew_and_starts_over_after_a_direction_expired():
    report = ClientReport()
    rows = [ClientCounters("10.88.0.2", 400, 4, 3000, 5, 10, 9), ClientCounters("10.88.0.3", 60, 1, 0, 0, 2, None)]
    items, totals = report.increments(rows, now=1000)
    assert items == [og_protocol.ClientUse("10.88.0.2", 400, 4, 3000, 5), og_protocol.ClientUse("10.88.0.3", 60, 1)]
    # Not sent (the connection broke): the next read still reports from the old baseline.
    again, _totals = report.increments(rows, now=1015)
    assert again == items
    report.sent(totals)
    # 15 s later: grown in both directions for .2 (its ages went on by 15 s), nothing for .3 (not reported).
    rows = [ClientCounters("10.88.0.2", 500, 6, 9000, 9, 25, 24), ClientCounters("10.88.0.3", 60, 1, 0, 0, 17, None)]
    items, totals = report.increments(rows, now=1015)
    assert items == [og_protocol.ClientUse("10.88.0.2", 100, 2, 6000, 4)]
    report.sent(totals)
    # The out element expired and came back with more than before (its first packet moved): all of it is new;
    # the in direction went on as before.
    rows = [ClientCounters("10.88.0.2", 700, 7, 9500, 10, 3, 39)]
    items, totals = report.increments(rows, now=1030)
    assert items == [og_protocol.ClientUse("10.88.0.2", 700, 7, 500, 1)]
    report.sent(totals)
    # Counters that went down (recreated within the tolerance of the first packet's time): all new too.
    items, _totals = report.increments([ClientCounters("10.88.0.2", 50, 1, 9500, 10, 5, 41)], now=1032)
    assert items == [og_protocol.ClientUse("10.88.0.2", 50, 1, 0, 0)]
