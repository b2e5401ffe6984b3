# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cutting established connections: conntrack entries of client flows to destinations allowed no more."""

from __future__ import annotations

import ipaddress
import re

from .og_command import CommandRunner
from .og_elements import Element

DELETED = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted")
PORTED = ("tcp", "udp", "sctp", "dccp", "udplite")   # protocols whose conntrack entries carry ports


class Matcher:
    """Answers 'does any of these elements allow this destination?' with a few hash lookups."""

    def __init__(self, elements):
        self.nets = {}  # (version, prefixlen) -> {network as int: [None or (proto, first, last)]}
        for element in elements:
            net = element.network
            self.nets.setdefault((net.version, net.prefixlen), {}).setdefault(
                int(net.network_address), []).append(element.proto_ports)

    def matches(self, address, proto=None, port=None):
        addr = ipaddress.ip_address(address)
        value = int(addr)
        for (version, prefixlen), nets in self.nets.items():
            if version != addr.version:
                continue
            shift = addr.max_prefixlen - prefixlen
            for scope in nets.get(value >> shift << shift, ()):
                if scope is None or (scope[0] == proto and port is not None and scope[1] <= port <= scope[2]):
                    return True
        return False


class Flow:
    """One conntrack entry, original direction."""

    __slots__ = ("proto", "src", "dst", "sport", "dport")

    def __init__(self, proto, src, dst, sport=None, dport=None):
        self.proto, self.src, self.dst, self.sport, self.dport = proto, src, dst, sport, dport


def parse_conntrack(text):
    """Flows (original direction) from `conntrack -L` output; lines it cannot read are skipped."""
    flows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].isdigit():
            continue
        fields = {}
        for word in words:
            key, eq, value = word.partition("=")
            if eq and key not in fields:  # the first of each key is the original direction
                fields[key] = value
        if "src" not in fields or "dst" not in fields:
            continue
        ports = words[0] in PORTED and fields.get("sport", "").isdigit() and fields.get("dport", "").isdigit()
        flows.append(Flow(words[0], fields["src"], fields["dst"],
                          int(fields["sport"]) if ports else None, int(fields["dport"]) if ports else None))
    return flows


class ConnectionCutter:
    """Deletes the conntrack entries of client flows whose destination was removed and is allowed no more.

    Without this, OG-FORWARD's ESTABLISHED rules keep such flows alive; after the delete their next packet is a
    new flow that the policy rejects. Flows of the gateway itself, and flows to destinations another element
    still allows, are left alone.
    """

    def __init__(self, client_networks, ipv6=False, run=None):
        self.clients = Matcher([Element(n) for n in client_networks])
        self.families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
        self.run = run or CommandRunner()

    def __call__(self, removed, remaining):
        """Cut the client flows to `removed` that nothing in `remaining` allows; return how many were cut.

        One `conntrack -D` per client, protocol, destination and port, not per flow: its filter takes every
        flow of that group at once (a client's hundreds of short connections to one port cost one process, not
        hundreds, so the next delta does not wait behind them); whether a flow is still allowed depends only on
        its protocol, destination and port, so a group is cut whole or not at all."""
        gone, kept = Matcher(removed), None
        cut = 0
        for family in self.families:
            listing = self.run(["conntrack", "-L", "-f", family], check=False)
            groups = {}
            for flow in parse_conntrack(listing.stdout):
                if not (self.clients.matches(flow.src) and gone.matches(flow.dst, flow.proto, flow.dport)):
                    continue
                if kept is None:
                    kept = Matcher(remaining)  # built only when a flow needs it: 100,000 elements cost ~1 s
                if not kept.matches(flow.dst, flow.proto, flow.dport):
                    groups[(flow.proto, flow.src, flow.dst, flow.dport)] = groups.get(
                        (flow.proto, flow.src, flow.dst, flow.dport), 0) + 1
            for (proto, src, dst, dport), listed in groups.items():
                argv = ["conntrack", "-D", "-f", family, "-p", proto, "-s", src, "-d", dst]
                if dport is not None:
                    argv += ["--dport", str(dport)]
                done = self.run(argv, check=False)
                if done.rc == 0:
                    cut += deleted_count(done.stderr, listed)
        return cut


def deleted_count(stderr, listed):
    """The flows `conntrack -D` says it deleted ("...: 47 flow entries have been deleted."), else `listed`."""
    found = DELETED.search(stderr or "")
    return int(found.group(1)) if found else listed
