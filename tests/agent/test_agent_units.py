"""The agent's pure parts: frame parsing, state file and journal, configuration
checks, the per-address series cap, how fresh a scrape is, and how long it waits before reconnecting."""

import json
import threading
import types
import urllib.request

import pytest
from tests.support.nslib import wait_until
from prometheus_client.parser import text_string_to_metric_families

from gateway_agent import cli, config, metrics, state
from gateway_agent.client import Agent, Reconnect, ServerClosed, Stats
from og_kernel import og_protocol
from og_kernel.og_command import CommandError
from og_kernel.og_elements import Element, digest_canonical
from og_kernel.og_firewall import Counters


@pytest.mark.parametrize("raw, words", [
    (b'{"v":1,"type":"heartbeat"}', "binary frame"),
    ('{"v":1,"type":"heartbeat","pad":"%s"}' % ("x" * (1 << 20)), "larger than the 1048576-byte limit"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('{"v":2,"type":"heartbeat"}', "protocol version 2 is not supported"),
    ('{"v":1,"type":"hello"}', "unknown message type 'hello'"),
])
def test_parse_frame_names_what_is_wrong(raw, words):
    with pytest.raises(og_protocol.ProtocolError) as info:
        og_protocol.parse_server_frame(raw)
    assert words in str(info.value)


def test_state_file_missing_corrupt_or_misshapen(tmp_path):
    path = tmp_path / "state.json"
    assert state.load(str(path)) == (0, None)
    state.save(str(path), 7, {"198.51.100.10/32"})
    assert state.load(str(path)) == (7, ["198.51.100.10/32"])
    path.write_text("{half")
    with pytest.raises(state.StateError, match=str(path)):
        state.load(str(path))
    path.write_text(json.dumps({"revision": "7", "elements": []}))
    with pytest.raises(state.StateError, match="revision"):
        state.load(str(path))


def test_the_mode_a_server_set_is_kept_and_wins_over_the_configuration_at_the_next_start(tmp_path, caplog):
    path = str(tmp_path / "state.json")
    cfg = {"state_file": path, "mode": "enforce"}
    assert state.load_mode(path) == ""
    assert cli.starting_mode(cfg, state) == "enforce"
    state.save_mode(path, "observe")
    assert state.load_mode(path) == "observe"
    assert cli.starting_mode(cfg, state) == "observe"
    assert "gateway mode observe, as a server last set it (the configuration says enforce)" in caplog.text
    for bad in ("{half", json.dumps({"mode": "allow-all"})):
        (tmp_path / "state.json.mode.json").write_text(bad)
        with pytest.raises(state.StateError, match="state.json.mode.json"):
            state.load_mode(path)
        # An unusable file: the configuration's mode, and the error in the log.
        assert cli.starting_mode(cfg, state) == "enforce"


def test_config_lists_every_problem_of_a_config_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"servers": "ws://10.0.0.5:8080/ws/gateway", "token_file": str(token),
                                "client_networks": ["10.88.0.1/24"], "outside_interface": "og-out",
                                "ipv6": "yes", "allow_dns_over_tls": "no", "drift_interval": -1,
                                "log_level": "loud"}))
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config", str(path)])
    assert info.value.problems == [
        "servers must be a list, not 'ws://10.0.0.5:8080/ws/gateway'",
        "ipv6 must be true or false, not 'yes'",
        "allow_dns_over_tls must be true or false, not 'no'",
        "no server: give --server ws://HOST:PORT/ws/gateway (or servers: in the config file)",
        "token_file %s is empty: put the gateway token in it" % token,
        "client network '10.88.0.1/24' has host bits set; did you mean 10.88.0.0/24?",
        "drift_interval -1 must be a number of seconds above 0, e.g. 30",
        "log_level 'loud' must be one of DEBUG, INFO, WARNING, ERROR",
    ]


def test_dns_over_tls_is_refused_unless_the_config_or_the_flag_allows_it(tmp_path):
    token = tmp_path / "token"
    token.write_text("t\n")
    base = ["--server", "ws://127.0.0.1:8080/ws/gateway", "--token-file", str(token), "--client-network",
            "10.88.0.0/24", "--outside-interface", "og-out"]
    assert config.load(base)["allow_dns_over_tls"] is False
    assert config.load(base + ["--allow-dns-over-tls"])["allow_dns_over_tls"] is True
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"allow_dns_over_tls": True}))
    assert config.load(base + ["--config", str(path)])["allow_dns_over_tls"] is True


class MemoryFirewall:
    """The firewall interface the agent uses, holding elements in memory (the kernel side has its own tests)."""

    def __init__(self):
        self.held = set()

    def replace(self, parsed):
        self.held = {e.text for e in parsed}
        return []

    def update(self, add=(), remove=(), keep=()):
        self.held = (self.held - {e.text for e in remove}) | {e.text for e in add}
        return []

    def elements(self, expected=None):
        return [Element.parse(e) for e in self.held]

    def check_update(self, add=(), remove=(), keep=()):
        return all(e.text in self.held for e in add) and not any(e.text in self.held for e in remove)


def test_aged_out_removals_keep_live_connections_and_operator_removals_cut(tmp_path):
    cuts = []
    agent = Agent({"state_file": str(tmp_path / "state.json"), "cut_on_remove": True}, MemoryFirewall(),
                  conntrack=lambda removed, remaining: cuts.append(sorted(e.text for e in removed)) or 1)
    parse = Element.parse
    agent.kernel.apply_snapshot(1, [parse("198.51.100.10/32"), parse("198.51.100.11/32"), parse("198.51.100.12/32")],
                                cut=False)
    # .10 aged out of a resolver's grace period, .11 was deleted by an operator, in one delta.
    agent.kernel.apply_delta(1, 2, [], [parse("198.51.100.10/32"), parse("198.51.100.11/32")],
                             aged=[parse("198.51.100.10/32")])
    assert cuts == [["198.51.100.11/32"]]
    assert agent.elements == {"198.51.100.12/32"}
    agent.kernel.apply_delta(2, 3, [], [parse("198.51.100.12/32")], aged=[parse("198.51.100.12/32")])
    assert cuts == [["198.51.100.11/32"]]


def test_a_delta_whose_aged_list_is_not_part_of_its_removals_is_refused():
    agent = Agent({"state_file": "/nonexistent/state.json"}, MemoryFirewall())
    with pytest.raises(og_protocol.ProtocolError, match="aged"):
        agent.frames.handle(json.dumps({"v": 1, "type": "delta", "base": 0, "revision": 1, "add": [], "remove": [],
                                        "aged": ["198.51.100.10/32"]}))


def most(low, high):
    """A 'random' jitter that always takes the longest wait, so that each delay is the bound itself."""
    return high


def attempts(reconnect, *outcomes, at=1000.0):
    """Delays after a series of attempts, each (seconds connected or None, close code or None), made back to back
    from monotonic time `at`."""
    delays = []
    for lasted, code in outcomes:
        started = at
        opened = None if lasted is None else at + 0.1
        at = at + 0.1 + (lasted or 0)
        delay = reconnect.delay(at, started, opened, code)
        delays.append(delay)
        at += delay
    return delays


def test_a_lost_connection_and_refused_attempts_back_off_exponentially_up_to_30s():
    lost, refused = (5.0, None), (None, None)
    assert attempts(Reconnect(most), lost, *[refused] * 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_after_a_close_from_the_server_every_attempt_comes_within_a_second_for_the_restart_window():
    reconnect = Reconnect(most)
    going_away, refused = (5.0, 1001), (None, None)
    # The server said 1001: at once, and its restart (refused attempts) is retried within a second, not backed off.
    assert attempts(reconnect, (5.0, None), refused, refused, going_away, *[refused] * 10) == \
        [0.5, 1.0, 2.0] + [1.0] * 11
    # Once the window (30 s after the close) has passed, the backoff starts over from its minimum.
    assert attempts(reconnect, refused, refused, refused, at=reconnect.restarting_until) == [0.5, 1.0, 2.0]


def test_a_close_that_is_a_refusal_keeps_the_backoff():
    # 1008: the server refused what the agent sent; any code right after connecting: e.g. its database is down.
    assert attempts(Reconnect(most), (5.0, 1008), (5.0, 1008), (5.0, 1008)) == [0.5, 1.0, 2.0]
    assert attempts(Reconnect(most), (0.01, 1011), (0.01, 1011), (0.01, 1000)) == [0.5, 1.0, 2.0]
    # ... but 1001 always means the server is stopping, and a longer session closed by any other code is clean.
    assert attempts(Reconnect(most), (0.01, 1001), (5.0, 1011), (5.0, 1000)) == [1.0, 1.0, 1.0]


def test_a_connection_lost_after_a_clean_reconnect_ends_the_restart_window():
    assert attempts(Reconnect(most), (5.0, 1001), (5.0, None), (None, None)) == [1.0, 0.5, 1.0]


def test_the_delays_are_jittered_within_their_bounds():
    calls = []
    reconnect = Reconnect(lambda low, high: calls.append((low, high)) or high / 2)
    assert attempts(reconnect, (5.0, 1001), (5.0, None)) == [0.5, 0.25]
    assert calls == [(0, 1.0), (0, 0.5)]


@pytest.mark.parametrize("payload, code, reason", [
    (b"\x03\xe9server stopping; reconnect", 1001, "server stopping; reconnect"),
    (b"\x03\xf3", 1011, ""),
    (b"", 1005, ""),
])
def test_a_close_frame_gives_its_code_and_reason(payload, code, reason):
    closed = ServerClosed.from_frame(payload)
    assert (closed.code, closed.reason) == (code, reason)


# ---- the state journal (gateway_agent/state.py) ---------------------------------------------------------------
def journal_lines(path):
    with open(state.journal_path(str(path)), "rb") as fh:
        return fh.read().splitlines(keepends=True)


def test_deltas_go_to_the_journal_and_restore_replays_them_on_the_state_file(tmp_path):
    path = tmp_path / "state.json"
    store = state.Store(str(path))
    store.save(4, ["198.51.100.10/32", "198.51.100.11/32"], {"198.51.100.10/32": ["a.example"]})
    store.record(4, 5, ["203.0.113.0/24"], ["198.51.100.11/32"], {"203.0.113.0/24": ["203.0.113.0/24"]},
                 None, None)
    store.record(5, 7, ["198.51.100.12/32"], [], {}, None, None)
    store.close()
    # The state file is untouched by deltas: one line each beside it.
    assert state.load(str(path)) == (4, ["198.51.100.10/32", "198.51.100.11/32"])
    assert len(journal_lines(path)) == 2
    assert state.Store(str(path)).restore() == (
        7, ["198.51.100.10/32", "198.51.100.12/32", "203.0.113.0/24"],
        {"198.51.100.10/32": ["a.example"], "203.0.113.0/24": ["203.0.113.0/24"]})


def test_a_crash_mid_journal_line_restores_the_revision_before_it_and_the_next_delta_appends_cleanly(tmp_path):
    path = tmp_path / "state.json"
    store = state.Store(str(path))
    store.save(1, ["198.51.100.10/32"])
    store.record(1, 2, ["198.51.100.20/32"], [], {}, None, None)
    store.close()
    with open(state.journal_path(str(path)), "ab") as fh:  # the crash: half of the next line reached the disk
        fh.write(b'{"base":2,"revision":3,"add":["198.51.')
    store = state.Store(str(path))
    assert store.restore() == (2, ["198.51.100.10/32", "198.51.100.20/32"], {})
    assert len(journal_lines(path)) == 1  # the torn tail is cut off, so it cannot glue onto the next line
    store.record(2, 3, ["198.51.100.30/32"], ["198.51.100.10/32"], {}, None, None)
    store.close()
    assert state.Store(str(path)).restore() == (3, ["198.51.100.20/32", "198.51.100.30/32"], {})


def test_an_unusable_line_or_a_gap_ends_the_replay_there(tmp_path):
    path = tmp_path / "state.json"
    state.save(str(path), 1, [])
    lines = [{"base": 1, "revision": 2, "add": ["198.51.100.20/32"], "remove": []},
             {"base": 5, "revision": 6, "add": ["198.51.100.60/32"], "remove": []}]
    with open(state.journal_path(str(path)), "w") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))
    assert state.Store(str(path)).restore() == (2, ["198.51.100.20/32"], {})
    with open(state.journal_path(str(path)), "w") as fh:
        fh.write('{"base": 1, "revision": "2", "add": [], "remove": []}\n')
    assert state.Store(str(path)).restore() == (1, [], {})


def test_the_journal_is_compacted_into_the_state_file_when_it_grows_and_replay_skips_what_it_holds(tmp_path):
    path = tmp_path / "state.json"
    store = state.Store(str(path), compact_after=2)
    store.save(1, [])
    elements, names = set(), {}
    for revision in (2, 3, 4):
        elements.add("198.51.100.%d/32" % revision)
        names["198.51.100.%d/32" % revision] = ["e%d" % revision]
        store.record(revision - 1, revision, ["198.51.100.%d/32" % revision], [],
                     {"198.51.100.%d/32" % revision: ["e%d" % revision]}, sorted(elements), names)
    store.close()
    # Two lines, then the third delta compacted: the state file holds revision 4 and the journal is empty.
    assert state.load(str(path)) == (4, ["198.51.100.2/32", "198.51.100.3/32", "198.51.100.4/32"])
    assert journal_lines(path) == []
    assert state.load_names(str(path)) == {"198.51.100.2/32": ["e2"], "198.51.100.3/32": ["e3"],
                                           "198.51.100.4/32": ["e4"]}
    # A crash after the state file was replaced but before the journal was emptied: old lines are skipped.
    with open(state.journal_path(str(path)), "w") as fh:
        fh.write(json.dumps({"base": 3, "revision": 4, "add": ["198.51.100.4/32"], "remove": []}) + "\n")
        fh.write(json.dumps({"base": 4, "revision": 5, "add": [], "remove": ["198.51.100.2/32"]}) + "\n")
    assert state.Store(str(path)).restore()[:2] == (5, ["198.51.100.3/32", "198.51.100.4/32"])


def test_a_restarted_agent_restores_the_snapshot_and_every_delta_after_it(tmp_path):
    cfg = {"state_file": str(tmp_path / "state.json")}
    parse = Element.parse
    agent = Agent(cfg, MemoryFirewall())
    agent.kernel.apply_snapshot(1, [parse("198.51.100.10/32"), parse("198.51.100.11/32")], names={})
    agent.kernel.apply_delta(1, 2, [parse("203.0.113.0/24 443/tcp")], [parse("198.51.100.10/32")],
                             names={"203.0.113.0/24 443/tcp": ["203.0.113.0/24 443/tcp"]})
    result = agent.kernel.apply_delta(2, 3, [parse("198.51.100.12/32")], [])
    assert result == (digest_canonical(["198.51.100.11/32", "198.51.100.12/32", "203.0.113.0/24 443/tcp"]), 3)
    assert state.load(cfg["state_file"]) == (1, ["198.51.100.10/32", "198.51.100.11/32"])
    agent.kernel.store.close()

    fw = MemoryFirewall()
    again = Agent(cfg, fw)
    again.kernel.restore()
    assert (again.revision, again.elements) == (3, {"198.51.100.11/32", "198.51.100.12/32", "203.0.113.0/24 443/tcp"})
    assert fw.held == again.elements
    assert again.names == {"203.0.113.0/24 443/tcp": ["203.0.113.0/24 443/tcp"]}
    assert again.kernel.kernel_digest() == result


# ---- the per-address and per-entry series caps (gateway_agent/metrics.py) ------------------------------------
class CountingFirewall:
    """Counters per element as a kernel would report them (out bytes, out packets, in bytes, in packets)."""

    def __init__(self, counters):
        self.table = {Element.parse(t): Counters(*c) for t, c in counters.items()}

    def counters(self, expected):
        return dict(self.table)

    def rejected(self):
        return 0, 0

    def denied(self):
        return {}


def metrics_of(counters, limit):
    agent = types.SimpleNamespace(lock=threading.Lock(), elements=set(counters), fw=CountingFirewall(counters),
                                  revision=1, stats=Stats(), names={}, cfg={"metrics_address_limit": limit})
    text = metrics.AgentMetrics(agent, "gw1").render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def series(samples, name):
    return {labels: value for (n, labels), value in samples.items() if n == name}


TRAFFIC = {  # element: (out bytes, out packets, in bytes, in packets)
    "198.51.100.1/32": (100, 1, 0, 0), "198.51.100.2/32": (5000, 5, 50000, 40), "198.51.100.3/32": (0, 0, 0, 0),
    "198.51.100.4/32": (700, 7, 700, 7), "198.51.100.5/32": (10, 1, 20, 2), "203.0.113.0/24 443/tcp": (900, 9, 0, 0),
}


def test_only_the_busiest_addresses_get_series_of_their_own_and_the_rest_sum_up_as_other():
    samples = metrics_of(TRAFFIC, limit=3)
    # The three busiest by bytes both ways: .2 (55,000), .4 (1,400), the port element (900); the other three sum up.
    assert series(samples, "og_gateway_bytes_total") == {
        (("address", "198.51.100.2/32"), ("direction", "out")): 5000.0,
        (("address", "198.51.100.2/32"), ("direction", "in")): 50000.0,
        (("address", "198.51.100.4/32"), ("direction", "out")): 700.0,
        (("address", "198.51.100.4/32"), ("direction", "in")): 700.0,
        (("address", "203.0.113.0/24 443/tcp"), ("direction", "out")): 900.0,
        (("address", "203.0.113.0/24 443/tcp"), ("direction", "in")): 0.0,
        (("address", "other"), ("direction", "out")): 110.0,
        (("address", "other"), ("direction", "in")): 20.0,
    }
    assert series(samples, "og_gateway_packets_total")[(("address", "other"), ("direction", "out"))] == 2.0
    assert series(samples, "iptables_bytes_count") == {
        (("hostname", "gw1"), ("ip", "198.51.100.2"), ("type", "OUTPUT")): 5000.0,
        (("hostname", "gw1"), ("ip", "198.51.100.2"), ("type", "INPUT")): 50000.0,
        (("hostname", "gw1"), ("ip", "198.51.100.4"), ("type", "OUTPUT")): 700.0,
        (("hostname", "gw1"), ("ip", "198.51.100.4"), ("type", "INPUT")): 700.0,
        (("hostname", "gw1"), ("ip", "203.0.113.0/24 443/tcp"), ("type", "OUTPUT")): 900.0,
        (("hostname", "gw1"), ("ip", "203.0.113.0/24 443/tcp"), ("type", "INPUT")): 0.0,
        (("hostname", "gw1"), ("ip", "other"), ("type", "OUTPUT")): 110.0,
        (("hostname", "gw1"), ("ip", "other"), ("type", "INPUT")): 20.0,
    }
    assert series(samples, "iptables_packets_count")[(("hostname", "gw1"), ("ip", "other"), ("type", "INPUT"))] == 2.0
    assert len(series(samples, "iptables_packets_count")) == 8
    assert series(samples, "og_gateway_aggregated_addresses") == {(): 3.0}
    assert series(samples, "og_gateway_allowed_elements") == {(): 6.0}


def test_within_the_limit_every_address_has_its_series_and_nothing_is_aggregated():
    samples = metrics_of(TRAFFIC, limit=6)
    assert len(series(samples, "og_gateway_bytes_total")) == 12
    assert len(series(samples, "iptables_bytes_count")) == 12
    assert not any(dict(labels).get("address") == "other" for labels in series(samples, "og_gateway_bytes_total"))
    assert series(samples, "og_gateway_aggregated_addresses") == {(): 0.0}
    # Ties (no traffic at all) keep the first addresses in text order.
    quiet = {"198.51.100.%d/32" % i: (0, 0, 0, 0) for i in range(1, 6)}
    assert sorted(dict(labels)["address"] for labels in series(metrics_of(quiet, 2), "og_gateway_bytes_total")) == [
        "198.51.100.1/32", "198.51.100.1/32", "198.51.100.2/32", "198.51.100.2/32", "other", "other"]
    assert series(metrics_of(quiet, 0), "og_gateway_bytes_total") == {
        (("address", "other"), ("direction", "out")): 0.0, (("address", "other"), ("direction", "in")): 0.0}


# Entries behind the elements of TRAFFIC: .2 and .5 are both produced by a.example.com and b.example.com (one group),
# the port element by c.example.com and the port-scoped entry itself (another group).
NAMES = {
    "198.51.100.1/32": ["a.example.com"], "198.51.100.2/32": ["b.example.com", "a.example.com"],
    "198.51.100.3/32": ["b.example.com"], "198.51.100.4/32": ["c.example.com"],
    "198.51.100.5/32": ["a.example.com", "b.example.com"],
    "203.0.113.0/24 443/tcp": ["c.example.com", "203.0.113.0/24 (443/tcp)"],
}
AB = "a.example.com + b.example.com"
PORT_GROUP = "203.0.113.0/24 (443/tcp) + c.example.com"


def entry_metrics_of(counters, names, limit):
    agent = types.SimpleNamespace(lock=threading.Lock(), elements=set(counters), fw=CountingFirewall(counters),
                                  revision=1, stats=Stats(), names=names, cfg={"metrics_entry_limit": limit})
    text = metrics.AgentMetrics(agent, "gw1").render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def entry(name, shared, direction):
    return (("direction", direction), ("entry", name), ("shared", shared))


def test_only_the_busiest_entries_get_series_of_their_own_and_the_rest_sum_up_as_other_per_shared():
    samples = entry_metrics_of(TRAFFIC, NAMES, limit=2)
    # Five series keys: a (100 bytes), the group a + b (.2 and .5: 55,030), b (0), c (1,400), the port group (900).
    # The two busiest keep theirs; a and b sum up as other/false, the port group as other/true.
    assert series(samples, "og_gateway_entry_bytes_total") == {
        entry(AB, "true", "out"): 5010.0, entry(AB, "true", "in"): 50020.0,
        entry("c.example.com", "false", "out"): 700.0, entry("c.example.com", "false", "in"): 700.0,
        entry("other", "false", "out"): 100.0, entry("other", "false", "in"): 0.0,
        entry("other", "true", "out"): 900.0, entry("other", "true", "in"): 0.0,
    }
    assert series(samples, "og_gateway_entry_packets_total") == {
        entry(AB, "true", "out"): 6.0, entry(AB, "true", "in"): 42.0,
        entry("c.example.com", "false", "out"): 7.0, entry("c.example.com", "false", "in"): 7.0,
        entry("other", "false", "out"): 1.0, entry("other", "false", "in"): 0.0,
        entry("other", "true", "out"): 9.0, entry("other", "true", "in"): 0.0,
    }
    assert series(samples, "og_gateway_aggregated_entries") == {(): 3.0}
    # Each byte once: the family sums to the traffic of all elements, as the per-address family does.
    assert sum(series(samples, "og_gateway_entry_bytes_total").values()) == sum(c[0] + c[2] for c in TRAFFIC.values())
    # The entry limit leaves the per-address series alone (metrics_address_limit's default 1000 > 6 elements).
    assert len(series(samples, "og_gateway_bytes_total")) == 12
    assert series(samples, "og_gateway_aggregated_addresses") == {(): 0.0}


def test_within_the_entry_limit_every_entry_has_its_series_and_at_zero_only_the_two_others_remain():
    samples = entry_metrics_of(TRAFFIC, NAMES, limit=5)
    assert series(samples, "og_gateway_entry_bytes_total") == {
        entry("a.example.com", "false", "out"): 100.0, entry("a.example.com", "false", "in"): 0.0,
        entry(AB, "true", "out"): 5010.0, entry(AB, "true", "in"): 50020.0,
        entry("b.example.com", "false", "out"): 0.0, entry("b.example.com", "false", "in"): 0.0,
        entry("c.example.com", "false", "out"): 700.0, entry("c.example.com", "false", "in"): 700.0,
        entry(PORT_GROUP, "true", "out"): 900.0, entry(PORT_GROUP, "true", "in"): 0.0,
    }
    assert series(samples, "og_gateway_aggregated_entries") == {(): 0.0}
    assert series(entry_metrics_of(TRAFFIC, NAMES, limit=0), "og_gateway_entry_bytes_total") == {
        entry("other", "false", "out"): 800.0, entry("other", "false", "in"): 700.0,
        entry("other", "true", "out"): 5910.0, entry("other", "true", "in"): 50020.0,
    }
    # Ties (no traffic at all) keep the first entries in the order of their first element (text order).
    quiet = {"198.51.100.%d/32" % i: (0, 0, 0, 0) for i in range(1, 6)}
    names = {t: ["e%d.example.com" % (6 - i)] for i, t in enumerate(sorted(quiet), 1)}
    assert series(entry_metrics_of(quiet, names, limit=2), "og_gateway_entry_bytes_total") == {
        entry("e5.example.com", "false", "out"): 0.0, entry("e5.example.com", "false", "in"): 0.0,
        entry("e4.example.com", "false", "out"): 0.0, entry("e4.example.com", "false", "in"): 0.0,
        entry("other", "false", "out"): 0.0, entry("other", "false", "in"): 0.0,
        entry("other", "true", "out"): 0.0, entry("other", "true", "in"): 0.0,
    }


@pytest.mark.parametrize("key, what", [("metrics_address_limit", "addresses"), ("metrics_entry_limit", "entries")])
@pytest.mark.parametrize("value, accepted", [(3, True), (0, True), (-1, False), (True, False), ("many", False)])
def test_metrics_limits_must_be_whole_numbers_of_zero_or_more(tmp_path, key, what, value, accepted):
    token = tmp_path / "token"
    token.write_text("secret\n")
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"servers": ["wss://10.0.0.5:8080/ws/gateway"], "token_file": str(token),
                                "client_networks": ["10.88.0.0/24"], "outside_interface": "og-out", key: value}))
    flag = "--" + key.replace("_", "-")
    if accepted:
        assert config.load(["--config", str(path)])[key] == value
        assert config.load(["--config", str(path), flag, "7"])[key] == 7
    else:
        with pytest.raises(config.ConfigError) as info:
            config.load(["--config", str(path)])
        assert info.value.problems == ["%s %r must be a whole number of %s, 0 or more, e.g. 1000" % (key, value, what)]


class DeltaDuringReadFirewall(MemoryFirewall):
    """Reads the kernel back as it was when the read began, while a delta lands (as the drift check's unlocked
    read can see it)."""

    def __init__(self):
        super().__init__()
        self.during_read = None

    def plan(self):
        return types.SimpleNamespace(changed=False)  # the policy's drift has tests of its own

    def elements(self, expected=None):
        seen = super().elements(expected)
        if self.during_read:
            self.during_read, land = None, self.during_read
            land()
        return seen


def test_the_drift_check_reads_unlocked_and_ignores_what_a_delta_changed_meanwhile(tmp_path):
    parse = Element.parse
    fw = DeltaDuringReadFirewall()
    agent = Agent({"state_file": str(tmp_path / "state.json")}, fw)
    agent.kernel.apply_snapshot(1, [parse("198.51.100.10/32"), parse("198.51.100.11/32")], names={})
    # A delta adds .12 and removes .11 while the check reads: its read is stale for those two only.
    fw.during_read = lambda: agent.kernel.apply_delta(1, 2, [parse("198.51.100.12/32")], [parse("198.51.100.11/32")])
    agent.kernel.repair_drift()
    assert (agent.stats.drift_repairs, agent.revision, fw.held) == (0, 2, {"198.51.100.10/32", "198.51.100.12/32"})
    # Drift elsewhere is still found while a delta lands: .10 removed by hand.
    fw.held.discard("198.51.100.10/32")
    fw.during_read = lambda: agent.kernel.apply_delta(2, 3, [parse("198.51.100.13/32")], [])
    agent.kernel.repair_drift()
    assert (agent.stats.drift_repairs, fw.held) == (
        1, {"198.51.100.10/32", "198.51.100.12/32", "198.51.100.13/32"})
    # A snapshot during the read makes it moot: nothing is compared until the next interval.
    fw.held.discard("198.51.100.10/32")
    fw.during_read = lambda: (agent.kernel.apply_snapshot(4, [parse("198.51.100.20/32")], names={}),
                              fw.held.add("198.51.100.99/32"))
    agent.kernel.repair_drift()
    assert (agent.stats.drift_repairs, fw.held) == (1, {"198.51.100.20/32", "198.51.100.99/32"})
    agent.kernel.repair_drift()
    assert (agent.stats.drift_repairs, fw.held) == (2, {"198.51.100.20/32"})


def test_an_unusable_state_file_empties_its_journal_so_later_deltas_do_not_follow_stale_lines(tmp_path):
    path = tmp_path / "state.json"
    store = state.Store(str(path))
    store.save(4, ["198.51.100.10/32"])
    store.record(4, 5, ["198.51.100.11/32"], [], {}, None, None)
    store.close()
    path.write_text("{half")
    with pytest.raises(state.StateError, match=str(path)):
        state.Store(str(path)).restore()
    assert journal_lines(path) == []


# ---- how fresh a scrape is: quick reads at scrape time, slow ones from the background reader -------------------
class ReadCounting(CountingFirewall):
    """CountingFirewall that counts its reads of the kernel."""

    reads = 0

    def counters(self, expected):
        self.reads += 1
        return super().counters(expected)


def fresh_metrics(limit=1000):
    traffic = {"198.51.100.1/32": (100, 1, 200, 2)}
    agent = types.SimpleNamespace(lock=threading.Lock(), elements=set(traffic), fw=ReadCounting(traffic),
                                  revision=1, stats=Stats(), names={}, cfg={"metrics_address_limit": limit})
    return agent, metrics.AgentMetrics(agent, "gw1")


def scraped(collector):
    text = collector.render(background=True).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def set_traffic(agent, out_bytes):
    agent.fw.table = {Element.parse("198.51.100.1/32"): Counters(out_bytes, 1, 200, 2)}


OUT = (("address", "198.51.100.1/32"), ("direction", "out"))


def test_a_scrape_reads_the_kernel_itself_while_reads_are_quick():
    agent, collector = fresh_metrics()
    assert series(scraped(collector), "og_gateway_bytes_total")[OUT] == 100.0
    set_traffic(agent, 5000)
    samples = scraped(collector)
    assert series(samples, "og_gateway_bytes_total")[OUT] == 5000.0
    assert agent.fw.reads == 2
    assert 0.0 <= samples[("og_gateway_counters_age_seconds", ())] < metrics.SLOW_READ


def test_when_reads_are_slow_a_scrape_serves_the_background_readers_latest_read(monkeypatch):
    monkeypatch.setattr(metrics, "SLOW_READ", 0.0)  # every read counts as slow, as 100,000 addresses' do
    agent, collector = fresh_metrics()
    assert series(scraped(collector), "og_gateway_bytes_total")[OUT] == 100.0  # nothing read yet: read now
    set_traffic(agent, 5000)
    assert series(scraped(collector), "og_gateway_bytes_total")[OUT] == 100.0  # served, not read
    assert agent.fw.reads == 1
    collector.read()  # what the background reader does every REFRESH_EVERY seconds
    assert series(scraped(collector), "og_gateway_bytes_total")[OUT] == 5000.0
    assert agent.fw.reads == 2
    # A read older than MAX_AGE (the reader failing or paused) is not served: the scrape reads the kernel itself.
    set_traffic(agent, 7000)
    collector.counted.read_at -= metrics.MAX_AGE + 1
    samples = scraped(collector)
    assert series(samples, "og_gateway_bytes_total")[OUT] == 7000.0
    assert agent.fw.reads == 3
    assert samples[("og_gateway_counters_age_seconds", ())] < metrics.MAX_AGE
    # Without background=True (the benchmark, tests) the kernel is always read.
    collector.render()
    assert agent.fw.reads == 4


class Ticks:
    """A stop event for refresh_loop: each wait() is one interval, stopped after `ticks` of them."""

    def __init__(self, ticks, every=None):
        self.ticks = ticks
        self.every = every

    def wait(self, _timeout):
        if self.every:
            self.every()
        self.ticks -= 1
        return self.ticks < 0


def test_the_background_reader_reads_only_while_reads_are_slow_and_scrapes_come(monkeypatch):
    agent, collector = fresh_metrics()
    collector.refresh_loop(Ticks(3))
    assert agent.fw.reads == 0  # never scraped: nothing to keep fresh
    scraped(collector)
    collector.refresh_loop(Ticks(3))
    assert agent.fw.reads == 1  # quick reads: the scrapes read for themselves
    monkeypatch.setattr(metrics, "SLOW_READ", 0.0)
    collector.refresh_loop(Ticks(3))
    assert agent.fw.reads == 4  # one read per interval
    collector.last_scrape -= metrics.IDLE_AFTER + 1
    collector.refresh_loop(Ticks(3))
    assert agent.fw.reads == 4  # nobody scraped for IDLE_AFTER: paused


def test_the_background_reader_outlives_a_kernel_that_cannot_be_read(monkeypatch):
    monkeypatch.setattr(metrics, "SLOW_READ", 0.0)
    agent, collector = fresh_metrics()
    scraped(collector)
    served = collector.counted

    def broken(_expected):
        raise CommandError("ipset list failed: Operation not permitted", cmd=["ipset", "list"], rc=1)

    agent.fw.counters = broken
    collector.refresh_loop(Ticks(2))
    assert collector.counted is served  # the last good read stays (and ages) until a read works again
    collector.counted.read_at -= metrics.MAX_AGE + 1
    with pytest.raises(CommandError):
        collector.render(background=True)  # too old to serve: the scrape reads and says why it cannot (503)


def test_the_served_metrics_follow_the_kernel_through_the_background_reader(monkeypatch):
    """serve(): the HTTP handler serves the reader's reads, and the reader thread it starts keeps them fresh."""
    monkeypatch.setattr(metrics, "SLOW_READ", 0.0)
    monkeypatch.setattr(metrics, "REFRESH_EVERY", 0.05)
    monkeypatch.setattr(metrics, "MAX_AGE", 3600.0)  # only the reader, never the scrape itself, can read again
    agent, _collector = fresh_metrics()
    agent.stats.policy_ok = True
    server = metrics.serve(agent, "127.0.0.1:0", "gw1")

    def out_bytes():
        url = "http://127.0.0.1:%d/metrics" % server.server_address[1]
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode()
        return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "og_gateway_bytes_total"}[OUT]

    try:
        assert out_bytes() == 100.0
        set_traffic(agent, 5000)
        assert wait_until(lambda: out_bytes() == 5000.0, timeout=30, what="the reader's next read served") is True
    finally:
        server.reader_stop.set()
        server.shutdown()
        server.server_close()
