# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""og_conntrack: which client flows a removal cuts, read from real `conntrack -L` output."""

from __future__ import absolute_import, division, print_function

from og_kernel.og_command import Result
from og_kernel.og_conntrack import ConnectionCutter, Matcher, parse_conntrack
from og_kernel.og_elements import Element

__metaclass__ = type

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
                          "--dport", "443"]]


def test_cutter_deletes_every_flow_to_a_removed_address():
    run = FakeRunner(CONNTRACK)
    assert ConnectionCutter(["10.88.0.0/24"], run=run)(elements("203.0.113.0/24"), []) == 4
    delete = ["conntrack", "-D", "-f", "ipv4", "-p"]
    assert run.calls[1:] == [
        delete + ["tcp", "-s", "10.88.0.2", "-d", "203.0.113.5", "--dport", "443"],
        delete + ["tcp", "-s", "10.88.0.2", "-d", "203.0.113.5", "--dport", "80"],
        delete + ["udp", "-s", "10.88.0.3", "-d", "203.0.113.5", "--dport", "443"],
        delete + ["icmp", "-s", "10.88.0.2", "-d", "203.0.113.5"],
    ]


def test_cutter_takes_a_clients_many_flows_to_one_port_with_one_delete_and_counts_what_conntrack_deleted():
    # A client's stream of short connections (TIME_WAIT entries) to one removed port: one process, not 300.
    line = ("tcp      6 119 TIME_WAIT src=10.88.0.2 dst=198.51.100.10 sport=%d dport=80 src=198.51.100.10 "
            "dst=203.0.113.2 sport=80 dport=%d [ASSURED] mark=0 use=1\n")
    listing = "".join(line % (40000 + i, 40000 + i) for i in range(300))
    calls = []

    def run(argv, stdin=None, check=True):
        calls.append(argv)
        if argv[1] == "-L":
            return Result(0, listing, "")
        # One more flow of the group opened between the listing and the delete: the filter takes it too.
        return Result(0, "", "conntrack v1.4.7 (conntrack-tools): 301 flow entries have been deleted.\n")
    assert ConnectionCutter(["10.88.0.0/24"], run=run)(elements("198.51.100.10/32 80/tcp"), []) == 301
    assert calls[1:] == [["conntrack", "-D", "-f", "ipv4", "-p", "tcp", "-s", "10.88.0.2", "-d", "198.51.100.10",
                          "--dport", "80"]]


def test_cutter_counts_nothing_when_conntrack_found_nothing_left_to_delete():
    def run(argv, stdin=None, check=True):   # the flow ended between the listing and the delete: rc 1
        if argv[1] == "-L":
            return Result(0, CONNTRACK, "")
        return Result(1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n")
    assert ConnectionCutter(["10.88.0.0/24"], run=run)(elements("198.51.100.10/32"), []) == 0


def test_matcher_networks_and_port_ranges():
    m = Matcher(elements("198.51.100.0/24", "203.0.113.7/32 8000-8100/tcp", "2001:db8::/64"))
    assert m.matches("198.51.100.200")
    assert not m.matches("198.51.101.1")
    assert m.matches("203.0.113.7", "tcp", 8050)
    assert not m.matches("203.0.113.7", "tcp", 8101)
    assert not m.matches("203.0.113.7", "udp", 8050)
    assert not m.matches("203.0.113.7")
    assert m.matches("2001:db8::1")
