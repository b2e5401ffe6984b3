"""The blocked and mode frames of og_protocol (each field checked, built only if a peer would take it) and the
agent's BlockedReport, which turns the kernel's running counts into increments (docs/protocol.md)."""

import json

import pytest

from gateway_agent.blocked import BlockedReport
from og_kernel import og_protocol
from og_kernel.og_firewall import Attempt

ITEM = {"client": "10.88.0.2", "destination": "198.51.100.20", "proto": "tcp", "port": "80", "count": 2,
        "bytes": 120, "first": 1795000000, "last": 1795000015, "observed": False}


def test_a_blocked_frame_round_trips_and_splits_at_the_limit():
    frames = og_protocol.blocked([ITEM] * (og_protocol.MAX_BLOCKED + 1), "observe")
    assert len(frames) == 2
    parsed = og_protocol.parse_agent_frame(frames[1])
    assert parsed == og_protocol.Blocked((og_protocol.Attempt(**ITEM),), "observe")
    assert len(og_protocol.parse_agent_frame(frames[0]).attempts) == og_protocol.MAX_BLOCKED


@pytest.mark.parametrize("change, message", [
    ({"count": 0}, "blocked count must be a positive integer, not 0"),
    ({"proto": "gre!"}, "blocked proto must be one of tcp, udp, sctp, udplite, icmp, icmpv6, ipv6-icmp or a "
                        "protocol number, not 'gre!'"),
    ({"observed": "no"}, "blocked observed must be true or false, not 'no'"),
    ({"first": -1}, "blocked first must be a non-negative integer (epoch seconds), not -1"),
    ({"client": ""}, "blocked client must be an IP address such as \"198.51.100.20\", not ''"),
    ({"port": 80}, "blocked port must be a text of 1-32 characters such as \"443\", not 80"),
])
def test_a_bad_attempt_is_refused_naming_the_field(change, message):
    raw = json.dumps({"v": 1, "type": "blocked", "attempts": [dict(ITEM, **change)]})
    with pytest.raises(og_protocol.ProtocolError) as exc:
        og_protocol.parse_agent_frame(raw)
    assert str(exc.value) == message
    with pytest.raises(og_protocol.ProtocolError):
        og_protocol.blocked([dict(ITEM, **change)])   # nor built: an agent never sends what a server refuses


def test_mode_frames_and_the_hellos_mode():
    assert og_protocol.parse_server_frame(og_protocol.mode("observe")) == og_protocol.Mode("observe")
    with pytest.raises(og_protocol.ProtocolError) as exc:
        og_protocol.parse_server_frame(json.dumps({"v": 1, "type": "mode", "mode": "audit"}))
    assert str(exc.value) == "mode mode must be one of enforce, observe, not 'audit'"
    hello = og_protocol.parse_agent_frame(og_protocol.hello("gw1", "1", 0, None, mode="observe"))
    assert hello.mode == "observe"
    assert og_protocol.parse_agent_frame(og_protocol.hello("gw1", "1", 0, None)).mode is None   # an older agent


def attempt(packets, age, observed=False, port="80"):
    return Attempt("10.88.0.2", "198.51.100.20", "tcp", port, packets, packets * 60, age, observed)


def test_the_report_sends_what_grew_and_starts_over_after_an_element_expired():
    report = BlockedReport()
    items, totals = report.increments([attempt(2, 10), attempt(1, 3, observed=True)], now=1000)
    assert [(i.count, i.bytes, i.first, i.last, i.observed) for i in items] == [
        (2, 120, 990, 1000, False), (1, 60, 997, 1000, True)]
    # Not sent (the connection broke): the next read reports all of it again.
    items, totals = report.increments([attempt(3, 25)], now=1015)
    assert [(i.count, i.first) for i in items] == [(3, 990)]
    report.sent(totals)
    items, totals = report.increments([attempt(3, 40)], now=1030)
    assert items == []                      # nothing new
    report.sent(totals)
    items, totals = report.increments([attempt(5, 55)], now=1045)
    assert [(i.count, i.bytes, i.first) for i in items] == [(2, 120, 990)]
    report.sent(totals)
    # The element expired and came back with a new first attempt: all of it is new.
    items, totals = report.increments([attempt(1, 2)], now=5000)
    assert [(i.count, i.first) for i in items] == [(1, 4998)]
