# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""og_protocol (docs/protocol.md): every builder's frame parses back into its typed frame, and every broken
frame is refused with the code and a message naming the field and the value."""

from __future__ import absolute_import, division, print_function

import json

import pytest

from og_kernel import og_protocol as p
from og_kernel.og_elements import Element, Holding, digest

__metaclass__ = type

A, B, P = "198.51.100.10/32", "203.0.113.0/24", "198.51.100.20/32 443/tcp"
D64 = digest([A])


def elements(*texts):
    return tuple(Element.parse(t) for t in texts)


def test_agent_frames_built_here_parse_back_on_the_server_side():
    holding = Holding([4, 6], ["10.0.0.0/8"])
    assert p.parse_agent_frame(p.hello("gw1", "1.2.3", 41, D64, holding)) == p.Hello("gw1", "1.2.3", 41, D64, holding)
    assert p.parse_agent_frame(p.hello("gw1", "1.2.3", 0, None)) == p.Hello("gw1", "1.2.3", 0, None, None)
    assert p.parse_agent_frame(p.ack(44, D64, 1203)) == p.Ack(44, D64, 1203)
    assert p.parse_agent_frame(p.heartbeat(1795000000.5)) == p.Heartbeat(1795000000.5)
    values = {A: {"out_bytes": 1200, "out_packets": 10, "in_bytes": 90000, "in_packets": 70}}
    assert p.parse_agent_frame(p.counters(1.5, "boot-1", values)) == p.Counters(values, "boot-1", True, 1.5)
    assert p.parse_agent_frame(p.error(p.BAD_VERSION, "no")) == p.Error(p.BAD_VERSION, "no")


def test_server_frames_built_here_parse_back_on_the_agent_side_with_their_elements_parsed():
    assert p.parse_server_frame(p.delta(41, 44, [A], [B, P], [P], {A: ["api.example"]})) == p.Delta(
        41, 44, elements(A), elements(B, P), elements(P), {A: ["api.example"]})
    assert [p.parse_server_frame(f) for f in p.snapshot(44, [A, P], {P: ["x (443/tcp)"]})] == [
        p.Snapshot(44, 0, 1, elements(A, P), {P: ["x (443/tcp)"]})]
    assert p.parse_server_frame(p.error(p.BAD_MESSAGE, "m")) == p.Error(p.BAD_MESSAGE, "m")


def test_a_snapshot_is_cut_into_chunks_of_at_most_chunk_elements_and_an_empty_one_is_one_chunk():
    texts = ["198.51.%d.%d/32" % (i // 256, i % 256) for i in range(p.CHUNK * 2 + 1)]
    frames = [json.loads(f) for f in p.snapshot(7, texts)]
    assert [(f["chunk"], f["chunks"], len(f["elements"])) for f in frames] == [
        (0, 3, p.CHUNK), (1, 3, p.CHUNK), (2, 3, 1)]
    assert [e for f in frames for e in f["elements"]] == texts
    assert [json.loads(f) for f in p.snapshot(7, [])] == [
        {"type": "snapshot", "revision": 7, "chunk": 0, "chunks": 1, "elements": [], "names": {}, "v": 1}]


def test_frames_are_compact_json_with_the_version():
    assert p.ack(3, D64, 1) == '{"type":"ack","revision":3,"digest":"%s","count":1,"v":1}' % D64


@pytest.mark.parametrize("raw, code, message", [
    ('{"v":2,"type":"hello"}', p.BAD_VERSION, "protocol version 2 is not supported; this server speaks v1"),
    ('{"type":"hello"}', p.BAD_VERSION, "protocol version None is not supported; this server speaks v1"),
    (b"{}", p.BAD_MESSAGE, "binary frame of 2 bytes: frames must be JSON text"),
    ("[1]", p.BAD_MESSAGE, "frame must be a JSON object, not list"),
    ("{nope", p.BAD_MESSAGE, "frame is not valid JSON: '{nope'"),
    ('{"v":1,"type":"delta"}', p.BAD_MESSAGE, "unknown message type 'delta'"),
    ('{"v":1,"type":"hello","name":"","revision":0}', p.BAD_MESSAGE,
     "hello name must be a string of 1-128 characters, not ''"),
    ('{"v":1,"type":"hello","name":"gw","revision":-1}', p.BAD_MESSAGE,
     "hello revision must be a non-negative integer, not -1"),
    ('{"v":1,"type":"hello","name":"gw","revision":true}', p.BAD_MESSAGE,
     "hello revision must be a non-negative integer, not True"),
    ('{"v":1,"type":"ack","revision":1,"digest":"00","count":0}', p.BAD_MESSAGE,
     "ack digest must be a 64-character lowercase SHA-256 hex string, not '00'"),
    ('{"v":1,"type":"ack","revision":1,"digest":"%s"}' % D64, p.BAD_MESSAGE,
     "ack count must be a non-negative integer, not None"),
    ('{"v":1,"type":"hello","name":"gw","revision":0,"holds":{"families":[5],"internal_networks":[]}}',
     p.BAD_MESSAGE, "hello holds families [5] must be a non-empty list of 4 and/or 6"),
])
def test_a_broken_agent_frame_names_the_field_and_the_value(raw, code, message):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_agent_frame(raw)
    assert (info.value.code, info.value.message[:len(message)]) == (code, message)


@pytest.mark.parametrize("raw, code, message", [
    ('{"v":2,"type":"delta"}', p.BAD_VERSION, "protocol version 2 is not supported; this agent speaks v1"),
    ('{"v":1,"type":"hello"}', p.BAD_MESSAGE, "unknown message type 'hello'"),
    ('{"v":1,"type":"snapshot","revision":1,"chunk":2,"chunks":2,"elements":[]}', p.BAD_MESSAGE,
     "snapshot chunk 2 of 2 is out of range"),
    ('{"v":1,"type":"snapshot","revision":1,"chunk":0,"chunks":1,"elements":"%s"}' % A, p.BAD_MESSAGE,
     "snapshot elements must be a list of elements, not str"),
    ('{"v":1,"type":"delta","base":2,"revision":1,"add":[],"remove":[]}', p.BAD_MESSAGE,
     "delta revision 1 is below its base 2"),
    ('{"v":1,"type":"delta","base":1,"revision":2,"add":["198.51.100.999/32"],"remove":[]}', p.BAD_MESSAGE,
     "delta add: "),
    ('{"v":1,"type":"delta","base":1,"revision":2,"add":[],"remove":["%s"],"aged":["%s"]}' % (A, B),
     p.BAD_MESSAGE, "delta aged lists elements that are not in its remove list: 203.0.113.0/24"),
    ('{"v":1,"type":"delta","base":"1","revision":2,"add":[],"remove":[]}', p.BAD_MESSAGE,
     "delta base must be a non-negative integer, not '1'"),
])
def test_a_broken_server_frame_names_the_field_and_the_value(raw, code, message):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_server_frame(raw)
    assert (info.value.code, info.value.message[:len(message)]) == (code, message)


def test_a_frame_over_the_size_limit_is_refused_before_it_is_decoded():
    raw = '{"v":1,"type":"heartbeat","pad":"%s"}' % ("x" * p.MAX_MESSAGE)
    with pytest.raises(p.ProtocolError, match="frame of %d bytes is larger than the %d-byte limit"
                       % (len(raw), p.MAX_MESSAGE)):
        p.parse_server_frame(raw)


def test_a_malformed_names_map_is_dropped_not_refused():
    raw = json.dumps({"v": 1, "type": "delta", "base": 1, "revision": 2, "add": [A], "remove": [],
                      "names": {A: ["ok", 3] + ["n%d" % i for i in range(30)], B: "not a list"}})
    assert p.parse_server_frame(raw).names == {A: ["ok"] + ["n%d" % i for i in range(19)]}


# ---- features and the domains frame (og-dns, docs/dns.md) ------------------------------------------------------
def test_features_ride_in_hello_snapshot_and_delta_and_are_absent_when_none():
    hello = p.hello("gw1", "1.2.3", 0, None, features=[p.FEATURE_DOMAINS])
    assert json.loads(hello)["features"] == ["domains"]
    assert p.parse_agent_frame(hello).features == ("domains",)
    assert "features" not in json.loads(p.hello("gw1", "1.2.3", 0, None))
    assert p.parse_agent_frame(p.hello("gw1", "1.2.3", 0, None)).features == ()
    (chunk,) = p.snapshot(3, [A], features=["domains"])
    assert p.parse_server_frame(chunk).features == ("domains",)
    assert p.parse_server_frame(p.delta(3, 4, [A], [], features=["domains"])).features == ("domains",)
    assert "features" not in json.loads(p.delta(3, 4, [A], []))
    # A feature this side does not know is kept as a name, not refused: the peer acts only on what it knows.
    assert p.parse_agent_frame(p.hello("gw1", "1", 0, None, features=["domains", "later"])).features == (
        "domains", "later")


def test_a_domains_frame_built_here_parses_back_into_its_entries_and_its_file_content():
    raw = p.domains(7, [{"entry": 3, "name": "example.com", "ports": ["443/tcp"]},
                        p.Domain(9, "*.cdn.example", ())])
    assert json.loads(raw) == {"type": "domains", "revision": 7, "v": 1, "domains": [
        {"entry": 3, "name": "example.com", "ports": ["443/tcp"]}, {"entry": 9, "name": "*.cdn.example", "ports": []}]}
    frame = p.parse_server_frame(raw)
    assert frame == p.Domains(7, (p.Domain(3, "example.com", ("443/tcp",)), p.Domain(9, "*.cdn.example", ())))
    assert frame.to_file() == {"revision": 7, "domains": [
        {"entry": 3, "name": "example.com", "ports": ["443/tcp"]}, {"entry": 9, "name": "*.cdn.example", "ports": []}]}
    assert p.parse_server_frame(p.domains(0, [])) == p.Domains(0, ())
    # Unknown keys of a later server are ignored, as everywhere in version 1.
    later = json.dumps({"v": 1, "type": "domains", "revision": 1, "extra": 1,
                        "domains": [{"entry": 1, "name": "a.example", "ports": [], "wildcard": False}]})
    assert p.parse_server_frame(later) == p.Domains(1, (p.Domain(1, "a.example"),))


@pytest.mark.parametrize("raw, message", [
    ('{"v":1,"type":"domains","domains":[]}', "domains revision must be a non-negative integer, not None"),
    ('{"v":1,"type":"domains","revision":1,"domains":{}}',
     "domains domains must be a list of at most 20000 {entry, name, ports} objects, not {}"),
    ('{"v":1,"type":"domains","revision":1,"domains":["a.example"]}',
     "domains domains item must be an object {entry, name, ports}, not 'a.example'"),
    ('{"v":1,"type":"domains","revision":1,"domains":[{"entry":0,"name":"a.example"}]}',
     "domains entry must be a positive integer entry id, not 0"),
    ('{"v":1,"type":"domains","revision":1,"domains":[{"entry":true,"name":"a.example"}]}',
     "domains entry must be a positive integer entry id, not True"),
    ('{"v":1,"type":"domains","revision":1,"domains":[{"entry":2,"name":"a.example"},{"entry":2,"name":"b.example"}]}',
     "domains entry 2 is listed twice"),
    ('{"v":1,"type":"domains","revision":1,"domains":[{"entry":2,"name":""}]}',
     "domains name of entry 2 must be a domain name of 1-255 characters"),
    ('{"v":1,"type":"domains","revision":1,"domains":[{"entry":2,"name":"a.example","ports":"443/tcp"}]}',
     "domains ports of entry 2 must be a list of port specs such as [\"443/tcp\"], not '443/tcp'"),
    ('{"v":1,"type":"delta","base":1,"revision":2,"add":[],"remove":[],"features":"domains"}',
     "delta features must be a list of at most 32 feature names"),
])
def test_a_broken_domains_frame_or_features_list_names_the_field_and_the_value(raw, message):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_server_frame(raw)
    assert (info.value.code, info.value.message[:len(message)]) == (p.BAD_MESSAGE, message)


def test_the_domains_builder_refuses_what_an_agent_would_refuse():
    with pytest.raises(p.ProtocolError, match="domains entry 4 is listed twice"):
        p.domains(1, [{"entry": 4, "name": "a.example"}, {"entry": 4, "name": "b.example"}])


def test_the_server_refuses_a_hello_with_a_malformed_features_list():
    with pytest.raises(p.ProtocolError, match=r"hello features must be a list .* not \[3\]"):
        p.parse_agent_frame('{"v":1,"type":"hello","name":"gw","revision":0,"features":[3]}')


def test_an_agent_frame_of_type_domains_is_refused_by_the_server():
    with pytest.raises(p.ProtocolError, match="unknown message type 'domains'"):
        p.parse_agent_frame(p.domains(1, []))


# ---- the learned frame and its ack (fleet-wide learning, docs/dns.md) -------------------------------------------
SPOOL = {"gateway": "gw1",
         "learned": [{"entry": 3, "name": "api.example.com", "address": "203.0.113.7", "ports": ["443/tcp"],
                      "ttl": 300, "expires": 1767229200, "seen": 1767228900}],
         "unlisted": [{"name": "other.example.net", "count": 4, "first": 1767228800, "last": 1767228900}],
         "caps": [{"entry": 3, "name": "api.example.com", "kind": "name", "hits": 2}]}


def test_a_learned_frame_of_a_spool_file_parses_back_on_the_server_side_and_its_ack_on_the_agent_side():
    raw = p.learned("learned-1767228900000-81-1.json", SPOOL)
    frame = p.parse_agent_frame(raw)
    assert isinstance(frame, p.Learned)
    assert frame.batch == "learned-1767228900000-81-1.json"
    assert frame.learned == (p.LearnedItem(3, "api.example.com", "203.0.113.7", ("443/tcp",), 300, 1767229200,
                                           1767228900),)
    assert frame.unlisted == (p.Unlisted("other.example.net", 4, 1767228800, 1767228900),)
    assert frame.caps == (p.Cap(3, "api.example.com", "name", 2),)
    assert [i.to_wire() for i in frame.learned] == SPOOL["learned"]
    ack = p.parse_server_frame(p.learned_ack(frame.batch))
    assert ack == p.LearnedAck("learned-1767228900000-81-1.json")
    assert p.FEATURE_LEARNED == "learned"


@pytest.mark.parametrize("change, message", [
    ({"batch": "../etc/passwd"}, "batch must be a spool file name"),
    ({"batch": ""}, "batch must be a spool file name"),
    ({"learned": [dict(SPOOL["learned"][0], entry=0)]}, "learned learned entry must be a positive integer"),
    ({"learned": [dict(SPOOL["learned"][0], address=7)]}, "learned learned address must be an IP address"),
    ({"learned": [dict(SPOOL["learned"][0], expires="soon")]}, "learned learned expires must be a non-negative"),
    ({"learned": [dict(SPOOL["learned"][0], ports="443/tcp")]}, "learned learned ports must be a list"),
    ({"unlisted": [dict(SPOOL["unlisted"][0], count=0)]}, "learned unlisted count must be a positive integer"),
    ({"unlisted": "x"}, "learned unlisted must be a list"),
    ({"caps": [dict(SPOOL["caps"][0], kind="zone")]}, "learned caps kind must be \"name\" or \"gateway\""),
])
def test_a_broken_learned_frame_names_the_field_and_the_value(change, message):
    msg = {"type": "learned", "v": 1, "batch": "learned-1-2-3.json"}
    msg.update({k: SPOOL[k] for k in ("learned", "unlisted", "caps")})
    msg.update(change)
    with pytest.raises(p.ProtocolError) as err:
        p.parse_agent_frame(json.dumps(msg))
    assert message in err.value.message


def test_the_learned_builder_refuses_what_the_parser_would():
    with pytest.raises(p.ProtocolError, match="learned learned address"):
        p.learned("learned-1-2-3.json", dict(SPOOL, learned=[dict(SPOOL["learned"][0], address=None)]))
    with pytest.raises(p.ProtocolError, match="learned_ack batch"):
        p.learned_ack("a/b")


def test_the_answers_of_a_spool_file_go_through_the_learned_frame_and_old_frames_have_none():
    """og-dns's names with the addresses it answered them with (docs/protocol.md, "learned"): optional on the wire,
    so a frame without them parses as before and a builder given none sends no key (an old server sees nothing
    new); addresses come back canonical."""
    spool = dict(SPOOL, answers=[{"name": "cdn.example.net", "addresses": ["203.0.113.7", "2001:DB8::0:7"],
                                  "last": 1767228900}])
    raw = p.learned("learned-1-2-3.json", spool)
    assert json.loads(raw)["answers"] == spool["answers"]
    frame = p.parse_agent_frame(raw)
    assert frame.answers == (p.Answer("cdn.example.net", ("203.0.113.7", "2001:db8::7"), 1767228900),)
    assert frame.answers[0].to_wire() == {"name": "cdn.example.net", "addresses": ["203.0.113.7", "2001:db8::7"],
                                          "last": 1767228900}
    plain = p.learned("learned-1-2-3.json", SPOOL)
    assert "answers" not in json.loads(plain) and p.parse_agent_frame(plain).answers == ()


@pytest.mark.parametrize("answer, message", [
    ({"name": "a.example", "addresses": [], "last": 1}, "learned answers addresses must be a list of 1-16"),
    ({"name": "a.example", "addresses": ["203.0.113.%d" % i for i in range(17)], "last": 1},
     "learned answers addresses must be a list of 1-16"),
    ({"name": "a.example", "addresses": ["203.0.113.300"], "last": 1},
     "learned answers address must be an IP address such as \"203.0.113.7\", not '203.0.113.300'"),
    ({"name": "", "addresses": ["203.0.113.7"], "last": 1}, "learned answers name must be a domain name"),
    ({"name": "a.example", "addresses": ["203.0.113.7"], "last": -1}, "learned answers last must be a non-negative"),
    ("a.example", "learned answers item must be an object"),
])
def test_a_broken_answer_names_the_field_and_the_value_and_is_never_built(answer, message):
    msg = {"type": "learned", "v": 1, "batch": "learned-1-2-3.json", "answers": [answer]}
    with pytest.raises(p.ProtocolError) as err:
        p.parse_agent_frame(json.dumps(msg))
    assert message in err.value.message
    with pytest.raises(p.ProtocolError) as err:
        p.learned("learned-1-2-3.json", {"answers": [answer]})
    assert message in err.value.message


def test_an_ack_with_differs_parses_back_and_old_acks_have_none():
    raw = p.ack(44, D64, 2, ({A, B}, set()))
    assert p.parse_agent_frame(raw) == p.Ack(44, D64, 2, {"missing": sorted([A, B]), "extra": [],
                                                          "missing_count": 2, "extra_count": 0})
    assert p.parse_agent_frame(p.ack(44, D64, 2)).differs is None
    # At most MAX_DIFFERS named, all counted.
    many = {"198.51.100.%d/32" % i for i in range(150)}
    parsed = p.parse_agent_frame(p.ack(1, D64, 0, (set(), many))).differs
    assert (len(parsed["extra"]), parsed["extra_count"]) == (p.MAX_DIFFERS, 150)


@pytest.mark.parametrize("differs, message", [
    ([], "ack differs must be an object of missing, extra, missing_count and extra_count, not '[]'"),
    ({"missing": [], "extra": [], "missing_count": 0}, "ack differs must be an object of missing, extra"),
    ({"missing": ["x"], "extra": [], "missing_count": 1, "extra_count": 0}, "ack differs missing: "),
    ({"missing": [A], "extra": [], "missing_count": 0, "extra_count": 0},
     "ack differs missing_count must be a whole number of at least the 1 elements named, not 0"),
    ({"missing": [], "extra": [A] * 101, "missing_count": 0, "extra_count": 101},
     "ack differs extra must be a list of at most 100 elements"),
])
def test_a_broken_differs_names_the_field_and_the_value(differs, message):
    raw = json.dumps({"v": 1, "type": "ack", "revision": 1, "digest": D64, "count": 0, "differs": differs})
    with pytest.raises(p.ProtocolError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        p.parse_agent_frame(raw)
