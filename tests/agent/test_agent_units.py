"""The agent's pure parts: frame parsing, which flows a deletion cuts, state file and configuration checks."""

import json

import pytest

from gateway_agent import config, state
from gateway_agent.client import ConnectionCutter, Matcher, ProtocolViolation, parse_conntrack, parse_frame
from og_kernel.og_command import Result
from og_kernel.og_elements import Element

# Real `conntrack -L -f ipv4` lines (conntrack-tools 1.4.7) plus one it cannot read.
CONNTRACK = """\
tcp      6 431999 ESTABLISHED src=10.88.0.2 dst=198.51.100.10 sport=40000 dport=80 src=198.51.100.10 dst=203.0.113.2 sport=80 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.88.0.2 dst=203.0.113.5 sport=40001 dport=443 src=203.0.113.5 dst=203.0.113.2 sport=443 dport=40001 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.88.0.2 dst=203.0.113.5 sport=40002 dport=80 src=203.0.113.5 dst=203.0.113.2 sport=80 dport=40002 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.99.0.1 dst=203.0.113.5 sport=40003 dport=443 src=203.0.113.5 dst=10.99.0.1 sport=443 dport=40003 [ASSURED] mark=0 use=1
udp      17 29 src=10.88.0.3 dst=203.0.113.5 sport=5000 dport=443 [UNREPLIED] src=203.0.113.5 dst=203.0.113.2 sport=443 dport=5000 mark=0 use=1
icmp     1 29 src=10.88.0.2 dst=203.0.113.5 type=8 code=0 id=7 src=203.0.113.5 dst=203.0.113.2 type=0 code=0 id=7 mark=0 use=1
garbage line
"""


class FakeRunner:
    def __init__(self, listing):
        self.listing = listing
        self.calls = []

    def __call__(self, argv, stdin=None, check=True):
        self.calls.append(argv)
        return Result(0, self.listing if argv[1] == "-L" else "", "")


def elements(*texts):
    return [Element.parse(t) for t in texts]


def test_parse_conntrack_reads_the_original_direction():
    flows = parse_conntrack(CONNTRACK)
    assert [(f.proto, f.src, f.dst, f.sport, f.dport) for f in flows] == [
        ("tcp", "10.88.0.2", "198.51.100.10", 40000, 80),
        ("tcp", "10.88.0.2", "203.0.113.5", 40001, 443),
        ("tcp", "10.88.0.2", "203.0.113.5", 40002, 80),
        ("tcp", "10.99.0.1", "203.0.113.5", 40003, 443),
        ("udp", "10.88.0.3", "203.0.113.5", 5000, 443),
        ("icmp", "10.88.0.2", "203.0.113.5", None, None),
    ]


def test_cutter_deletes_only_client_flows_that_nothing_allows_any_more():
    run = FakeRunner(CONNTRACK)
    cut = ConnectionCutter(["10.88.0.0/24"], run=run)(
        elements("198.51.100.10/32", "203.0.113.5/32 443/tcp"), elements("198.51.100.0/24"))
    # .10 is still allowed by the /24; port 80 and ICMP were never part of the removed 443/tcp; 10.99.0.1 is
    # the gateway itself, not a client; udp/443 is not tcp/443.
    assert cut == 1
    assert run.calls == [["conntrack", "-L", "-f", "ipv4"],
                         ["conntrack", "-D", "-f", "ipv4", "-p", "tcp", "-s", "10.88.0.2", "-d", "203.0.113.5",
                          "--sport", "40001", "--dport", "443"]]


def test_cutter_deletes_every_flow_to_a_removed_address():
    run = FakeRunner(CONNTRACK)
    assert ConnectionCutter(["10.88.0.0/24"], run=run)(elements("203.0.113.0/24"), []) == 4
    delete = ["conntrack", "-D", "-f", "ipv4", "-p"]
    assert run.calls[1:] == [
        delete + ["tcp", "-s", "10.88.0.2", "-d", "203.0.113.5", "--sport", "40001", "--dport", "443"],
        delete + ["tcp", "-s", "10.88.0.2", "-d", "203.0.113.5", "--sport", "40002", "--dport", "80"],
        delete + ["udp", "-s", "10.88.0.3", "-d", "203.0.113.5", "--sport", "5000", "--dport", "443"],
        delete + ["icmp", "-s", "10.88.0.2", "-d", "203.0.113.5"],
    ]


def test_matcher_networks_and_port_ranges():
    m = Matcher(elements("198.51.100.0/24", "203.0.113.7/32 8000-8100/tcp", "2001:db8::/64"))
    assert m.matches("198.51.100.200")
    assert not m.matches("198.51.101.1")
    assert m.matches("203.0.113.7", "tcp", 8050)
    assert not m.matches("203.0.113.7", "tcp", 8101)
    assert not m.matches("203.0.113.7", "udp", 8050)
    assert not m.matches("203.0.113.7")
    assert m.matches("2001:db8::1")


@pytest.mark.parametrize("raw, words", [
    (b'{"v":1,"type":"heartbeat"}', "binary frame"),
    ('{"v":1,"type":"heartbeat","pad":"%s"}' % ("x" * (1 << 20)), "larger than the 1048576-byte limit"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('{"v":2,"type":"heartbeat"}', "protocol version 2 is not supported"),
    ('{"v":1,"type":"hello"}', "unknown message type 'hello'"),
])
def test_parse_frame_names_what_is_wrong(raw, words):
    with pytest.raises(ProtocolViolation) as info:
        parse_frame(raw)
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


def test_config_lists_every_problem_of_a_config_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"servers": "ws://10.0.0.5:8080/ws/gateway", "token_file": str(token),
                                "client_networks": ["10.88.0.1/24"], "outside_interface": "og-out",
                                "ipv6": "yes", "drift_interval": -1, "log_level": "loud"}))
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config", str(path)])
    assert info.value.problems == [
        "servers must be a list, not 'ws://10.0.0.5:8080/ws/gateway'",
        "ipv6 must be true or false, not 'yes'",
        "no server: give --server ws://HOST:PORT/ws/gateway (or servers: in the config file)",
        "token_file %s is empty: put the gateway token in it" % token,
        "client network '10.88.0.1/24' has host bits set; did you mean 10.88.0.0/24?",
        "drift_interval -1 must be a number of seconds above 0, e.g. 30",
        "log_level 'loud' must be one of DEBUG, INFO, WARNING, ERROR",
    ]


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
    from gateway_agent.client import Agent
    cuts = []
    agent = Agent({"state_file": str(tmp_path / "state.json"), "cut_on_remove": True}, MemoryFirewall(),
                  conntrack=lambda removed, remaining: cuts.append(sorted(e.text for e in removed)) or 1)
    parse = Element.parse
    agent.apply_snapshot(1, [parse("198.51.100.10/32"), parse("198.51.100.11/32"), parse("198.51.100.12/32")],
                         cut=False)
    # .10 aged out of a resolver's grace period, .11 was deleted by an operator, in one delta.
    agent.apply_delta(1, 2, [], [parse("198.51.100.10/32"), parse("198.51.100.11/32")],
                      aged=[parse("198.51.100.10/32")])
    assert cuts == [["198.51.100.11/32"]]
    assert agent.elements == {"198.51.100.12/32"}
    agent.apply_delta(2, 3, [], [parse("198.51.100.12/32")], aged=[parse("198.51.100.12/32")])
    assert cuts == [["198.51.100.11/32"]]


def test_a_delta_whose_aged_list_is_not_part_of_its_removals_is_refused():
    from gateway_agent.client import Agent
    agent = Agent({"state_file": "/nonexistent/state.json"}, MemoryFirewall())
    with pytest.raises(ProtocolViolation, match="aged"):
        agent.handle(json.dumps({"v": 1, "type": "delta", "base": 0, "revision": 1, "add": [], "remove": [],
                                 "aged": ["198.51.100.10/32"]}))
