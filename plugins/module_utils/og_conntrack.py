# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cutting established connections: conntrack entries of client flows to destinations allowed no more."""

from __future__ import annotations

import ipaddress

from .og_command import CommandRunner
from .og_elements import Element

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

    def delete_argv(self, family):
        argv = ["conntrack", "-D", "-f", family, "-p", self.proto, "-s", self.src, "-d", self.dst]
        if self.sport is not None and self.dport is not None:
            argv += ["--sport", str(self.sport), "--dport", str(self.dport)]
        return argv


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
        gone, kept = Matcher(removed), None
        cut = 0
        for family in self.families:
            listing = self.run(["conntrack", "-L", "-f", family], check=False)
            for flow in parse_conntrack(listing.stdout):
                if not (self.clients.matches(flow.src) and gone.matches(flow.dst, flow.proto, flow.dport)):
                    continue
                if kept is None:
                    kept = Matcher(remaining)  # built only when a flow needs it: 100,000 elements cost ~1 s
                if not kept.matches(flow.dst, flow.proto, flow.dport):
                    if self.run(flow.delete_argv(family), check=False).rc == 0:
                        cut += 1
        return cut
