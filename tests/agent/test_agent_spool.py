"""The agent's side of og-dns's spool (docs/dns.md, "Fleet-wide learning"): files written by og-dns's own Spool
go out oldest first as learned frames, only to a server that announced "learned", are deleted on their
learned_ack only, and are sent again in the next session when their ack did not come."""

import json
import os
import types

import pytest

from gateway_agent import config
from gateway_agent.dns.spool import Spool
from gateway_agent.frames import Follower
from gateway_agent.spool import IN_FLIGHT, SpoolSender
from og_kernel import og_protocol


def spool_files(directory, count):
    """`count` files written the way og-dns writes them (its Spool class), a second apart."""
    spool = Spool(str(directory), "gw1")
    for i in range(count):
        spool.note_learned(3, "api.example.com", "203.0.113.%d" % (i + 1), ["443/tcp"], 300, 1767229200 + i,
                           1767228900 + i)
        spool.note_unlisted("other.example.net", 1767228900 + i)
        spool.flush(now=1767228900 + i)
    return sorted(os.listdir(str(directory)))


def follower(directory):
    kernel = types.SimpleNamespace(stats=types.SimpleNamespace(last_contact=0, server_revision=0), revision=0)
    return Follower({"dns_spool_dir": str(directory), "dns_domains_file": ""}, kernel)


def test_spool_files_go_oldest_first_as_learned_frames_and_only_an_ack_deletes_one(tmp_path):
    names = spool_files(tmp_path, 3)
    sender = SpoolSender(str(tmp_path))
    frames = [og_protocol.parse_agent_frame(f) for f in sender.frames()]
    assert [f.batch for f in frames] == names
    assert [f.learned[0].address for f in frames] == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert frames[0].unlisted[0].name == "other.example.net"
    assert sender.frames() == []                     # in flight: not sent twice in one session
    sender.ack(names[0])
    assert sorted(os.listdir(str(tmp_path))) == names[1:]
    sender.reset()                                   # the session broke before the other acks
    assert [og_protocol.parse_agent_frame(f).batch for f in sender.frames()] == names[1:]


def test_at_most_in_flight_frames_wait_for_their_acks(tmp_path):
    names = spool_files(tmp_path, IN_FLIGHT + 2)
    sender = SpoolSender(str(tmp_path))
    assert len(sender.frames()) == IN_FLIGHT
    sender.ack(names[0])
    assert [og_protocol.parse_agent_frame(f).batch for f in sender.frames()] == [names[IN_FLIGHT]]


def test_a_file_no_server_would_accept_is_removed_and_the_rest_still_go(tmp_path):
    names = spool_files(tmp_path, 1)
    (tmp_path / "learned-1-1-1.json").write_text(json.dumps({"learned": [{"entry": 0}]}))
    sender = SpoolSender(str(tmp_path))
    assert [og_protocol.parse_agent_frame(f).batch for f in sender.frames()] == names
    assert sender.refused == 1 and sorted(os.listdir(str(tmp_path))) == names


def test_nothing_goes_to_a_server_that_did_not_announce_learned_and_its_ack_deletes_the_file(tmp_path):
    names = spool_files(tmp_path, 1)
    f = follower(tmp_path)
    f.reset()
    assert f.learned() == []
    f.server_features = ("domains",)
    assert f.learned() == []
    f.server_features = (og_protocol.FEATURE_LEARNED,)
    assert [og_protocol.parse_agent_frame(x).batch for x in f.learned()] == names
    assert f.handle(og_protocol.learned_ack(names[0])) == []
    assert os.listdir(str(tmp_path)) == []


def test_the_spool_dir_must_be_absolute_or_empty(tmp_path):
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"dns_spool_dir": "spool"}))
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config", str(path)])
    assert any(p.startswith("dns_spool_dir 'spool' must be an absolute path") for p in info.value.problems)
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config", str(path), "--dns-spool-dir", "rel"])
    assert any(p.startswith("dns_spool_dir 'rel' must be an absolute path") for p in info.value.problems)
