# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway's data plane: the sets, chains and rules outputguard owns (docs/kernel-interface.md).

Allowed destinations live in ipset hash sets with per-element counters, referenced by a few rules in chains
named OG-*; lookups are O(1) whatever the size of the allowlist. Used by the og_iptables_allow module and
by the gateway agent alike. Only objects named og-* (sets) and OG-* (chains), and the one jump into each
owned chain, are ever changed.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import operator
import os
import re
import socket

from .og_command import CommandError, CommandRunner, refuse_root_netns
from .og_elements import Element
from .og_netpolicy import DEFAULT_INTERNAL_NETWORKS, AddressPolicy, TargetError

MAXELEM = 1048576
# The denied-destination sets only feed a metric: bounded, and an address is forgotten an hour after its first
# recorded attempt (see Family.reject_rules for why not the last).
DENIED_MAXELEM = 65536
DENIED_TIMEOUT = 3600
# The blocked sets record each refused attempt by (destination, protocol:port, client), with counters: what the
# agent reports to the server's Blocked page (docs/kernel-interface.md). Bounded and forgotten like og-denied.
# The observed sets are the same for a gateway in observe mode: attempts it would have refused but forwarded.
BLOCKED_MAXELEM = 65536
BLOCKED_TIMEOUT = 3600
MODES = ("enforce", "observe")
# The learn sets hold what og-dns learned from DNS answers (docs/kernel-interface.md): every add gives its own
# timeout, this is only the default; at most the gateway cap of og-dns per family.
LEARN_TIMEOUT = 3600
LEARN_MAXELEM = 100000
# The per-client sets count, per client address, what crossed the gateway through an accepting rule: og-perclient
# what the client sent, og-perclient-in the replies it got (OG-ACCEPT, docs/kernel-interface.md). Bounded: when
# one is full, new clients still pass but are not counted (the agent's og_gateway_client_sets_full says so). As
# with og-denied, an element is forgotten CLIENT_TIMEOUT after the client's first packet and counted afresh.
CLIENT_MAXELEM = 65536
CLIENT_TIMEOUT = 3600
DOT_PORT = 853  # DNS over TLS: refused for clients unless the policy allows it (allow_dns_over_tls)
CHECK_MAX = 20000  # members check_update() tests one by one at most
CHAIN = "OG-FORWARD"
REJECT_CHAIN = "OG-REJECT"
ACCEPT_CHAIN = "OG-ACCEPT"
NAT_CHAIN = "OG-POSTROUTING"
TEMP_SUFFIX = "-t"
SYS_CLASS_NET = "/sys/class/net"
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class FirewallError(CommandError):
    """The data plane cannot be put in place; the message says what is wrong and how to fix it."""


class Counters(tuple):
    """Traffic through one element: out = client to internet, in = internet to client.

    A tuple (out_bytes, out_packets, in_bytes, in_packets): a scrape builds 100,000 of them, and a tuple is built
    in C where an object with four attributes took a third of counters() (bench/scrape.py --profile).
    """

    __slots__ = ()
    FIELDS = ("out_bytes", "out_packets", "in_bytes", "in_packets")

    def __new__(cls, out_bytes=0, out_packets=0, in_bytes=0, in_packets=0):
        return tuple.__new__(cls, (out_bytes, out_packets, in_bytes, in_packets))

    out_bytes = property(operator.itemgetter(0))
    out_packets = property(operator.itemgetter(1))
    in_bytes = property(operator.itemgetter(2))
    in_packets = property(operator.itemgetter(3))

    def as_dict(self):
        return dict(zip(self.FIELDS, self))

    def __eq__(self, other):
        return isinstance(other, Counters) and tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self):
        return "Counters(%s)" % ", ".join("%s=%d" % kv for kv in self.as_dict().items())


# Counters from a 4-tuple without the keyword signature's Python call: what counters() builds 100,000 of.
_counters = functools.partial(tuple.__new__, Counters)


class SetSpec(object):
    """One owned ipset: name, type, family, whether it counts, its size limit and its default timeout (or None)."""

    __slots__ = ("name", "type", "family", "counters", "maxelem", "timeout")

    def __init__(self, name, type_, family, counters=True, maxelem=MAXELEM, timeout=None):
        self.name = name
        self.type = type_
        self.family = family
        self.counters = counters
        self.maxelem = maxelem
        self.timeout = timeout

    @property
    def temp(self):
        """The temporary set a snapshot is built in before it is swapped in."""
        return self.name + TEMP_SUFFIX

    def create_line(self, name=None, hashsize=None):
        return "create %s %s family %s%s maxelem %d%s%s" % (
            name or self.name, self.type, self.family, " hashsize %d" % hashsize if hashsize else "", self.maxelem,
            " timeout %d" % self.timeout if self.timeout else "", " counters" if self.counters else "")

    def describe(self):
        return "ipset %s %s family %s%s%s" % (
            self.name, self.type, self.family, " timeout %d" % self.timeout if self.timeout else "",
            " counters" if self.counters else "")


def describe_header(name, type_, header):
    """The same text as SetSpec.describe() for a set as the kernel reports it."""
    words = header.split()
    family = words[words.index("family") + 1] if "family" in words[:-1] else "?"
    timeout = " timeout " + words[words.index("timeout") + 1] if "timeout" in words[:-1] else ""
    return "ipset %s %s family %s%s%s" % (name, type_, family, timeout, " counters" if "counters" in words else "")


def _hashsize(members):
    """A hash size for a set built with this many members, or None for ipset's default of 1024 (grown in steps)."""
    size = 1024
    while size * 2 < members:
        size *= 2
    return size if size > 1024 else None


class Family(object):
    """Names, commands and rules of one address family (4 or 6)."""

    def __init__(self, version):
        self.version = version
        self.iptables = "iptables" if version == 4 else "ip6tables"
        self.restore = "iptables-restore" if version == 4 else "ip6tables-restore"
        fam = "inet" if version == 4 else "inet6"
        self.clients = SetSpec("og-clients%d" % version, "hash:net", fam, counters=False)
        self.allow = SetSpec("og-allow%d" % version, "hash:net", fam)
        self.allow_in = SetSpec("og-allow%d-in" % version, "hash:net", fam)
        self.allowp = SetSpec("og-allowp%d" % version, "hash:net,port", fam)
        self.allowp_in = SetSpec("og-allowp%d-in" % version, "hash:net,port", fam)
        self.denied = SetSpec("og-denied%d" % version, "hash:ip", fam, maxelem=DENIED_MAXELEM, timeout=DENIED_TIMEOUT)
        self.blocked = SetSpec("og-blocked%d" % version, "hash:ip,port,ip", fam, maxelem=BLOCKED_MAXELEM,
                               timeout=BLOCKED_TIMEOUT)
        self.observed = SetSpec("og-observed%d" % version, "hash:ip,port,ip", fam, maxelem=BLOCKED_MAXELEM,
                                timeout=BLOCKED_TIMEOUT)
        # Filled by og-dns (og_learn.LearnSets) and emptied by the kernel's timeouts: never flushed or swapped.
        self.learn = SetSpec("og-learn%d" % version, "hash:ip", fam, maxelem=LEARN_MAXELEM, timeout=LEARN_TIMEOUT)
        self.learnp = SetSpec("og-learnp%d" % version, "hash:ip,port", fam, maxelem=LEARN_MAXELEM,
                              timeout=LEARN_TIMEOUT)
        # Filled by OG-ACCEPT's SET target, emptied by the kernel's timeouts: never flushed or swapped either.
        self.perclient = SetSpec("og-perclient%d" % version, "hash:ip", fam, maxelem=CLIENT_MAXELEM,
                                 timeout=CLIENT_TIMEOUT)
        self.perclient_in = SetSpec("og-perclient%d-in" % version, "hash:ip", fam, maxelem=CLIENT_MAXELEM,
                                    timeout=CLIENT_TIMEOUT)
        self.reject_with = "icmp-admin-prohibited" if version == 4 else "icmp6-adm-prohibited"

    @property
    def sets(self):
        return [self.clients, self.allow, self.allow_in, self.allowp, self.allowp_in, self.denied, self.learn,
                self.learnp, self.blocked, self.observed, self.perclient, self.perclient_in]

    @property
    def client_sets(self):
        """The per-client accounting sets: (out, in)."""
        return [self.perclient, self.perclient_in]

    @property
    def learn_sets(self):
        """The sets og-dns fills; created with the policy, their contents are never touched by replace/update."""
        return [self.learn, self.learnp]

    @property
    def element_sets(self):
        return [self.allow, self.allow_in, self.allowp, self.allowp_in]

    def sets_for(self, element):
        """(out set, in set) that hold an element."""
        return (self.allow, self.allow_in) if element.port is None else (self.allowp, self.allowp_in)

    def forward_rules(self, out, allow_dns_over_tls=False):
        """OG-FORWARD as `iptables -S` prints it; anything not client <-> outside falls through (RETURN)."""
        c = self.clients.name
        # DNS over TLS would get names past og-dns, so it is refused first, even to an allowed address.
        dot = [] if allow_dns_over_tls else [
            "-A %s -o %s -p tcp -m set --match-set %s src -m tcp --dport %d -j %s"
            % (CHAIN, out, c, DOT_PORT, REJECT_CHAIN)]
        # Port-scoped sets first: a packet is counted by the first set that matches, so an address that is also
        # allowed plainly leaves its scoped ports' traffic to the port-scoped element (docs/kernel-interface.md).
        # The learned sets after the allowlist, so traffic to an allowed address is counted by its element.
        # Every accepting rule jumps to OG-ACCEPT, which counts the packet for its client and accepts it.
        return dot + [
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst,dst -j %s"
            % (CHAIN, out, c, self.allowp.name, ACCEPT_CHAIN),
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst -j %s"
            % (CHAIN, out, c, self.allow.name, ACCEPT_CHAIN),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED "
            "-m set --match-set %s src,src -j %s" % (CHAIN, out, c, self.allowp_in.name, ACCEPT_CHAIN),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED "
            "-m set --match-set %s src -j %s" % (CHAIN, out, c, self.allow_in.name, ACCEPT_CHAIN),
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst,dst -j %s"
            % (CHAIN, out, c, self.learnp.name, ACCEPT_CHAIN),
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst -j %s"
            % (CHAIN, out, c, self.learn.name, ACCEPT_CHAIN),
            # Flows whose address left the allowlist stay up; scoped to clients so other forwarding is untouched.
            "-A %s -o %s -m set --match-set %s src -m conntrack --ctstate RELATED,ESTABLISHED -j %s"
            % (CHAIN, out, c, ACCEPT_CHAIN),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED -j %s"
            % (CHAIN, out, c, ACCEPT_CHAIN),
            "-A %s -o %s -m set --match-set %s src -j %s" % (CHAIN, out, c, REJECT_CHAIN),
        ]

    def reject_rules(self, mode="enforce"):
        """OG-REJECT: record a new connection attempt, then refuse it (enforce) or let it pass (observe).

        OG-FORWARD jumps here after accepting ESTABLISHED,RELATED, so NEW and INVALID packets arrive; only NEW
        ones count. An attempt to a recorded destination is counted by the set match (it updates the element's
        counters by default); the first attempt is counted by SET itself, which creates the element with that
        packet's counters (1 packet, its length). No --exist: re-adding would reset the counters to that one
        packet, so an address is forgotten DENIED_TIMEOUT after its first recorded attempt and starts again.
        Each attempt is counted twice, in the same way: per destination (og-denied, the metric) and per
        (destination, protocol:port, client) (og-blocked, what the agent reports to the server).

        In observe mode the attempt goes to og-observed by (destination, protocol:port, client) instead and its
        NEW packet is accepted through OG-ACCEPT, so its client's traffic counts it (the rest of the flow then passes
        as ESTABLISHED); INVALID packets are still refused.
        """
        if mode == "observe":
            o = self.observed.name
            return [
                "-A %s -m conntrack --ctstate NEW -m set --match-set %s dst,dst,src" % (REJECT_CHAIN, o),
                "-A %s -m conntrack --ctstate NEW -j SET --add-set %s dst,dst,src" % (REJECT_CHAIN, o),
                "-A %s -m conntrack --ctstate NEW -j %s" % (REJECT_CHAIN, ACCEPT_CHAIN),
                "-A %s -p tcp -j REJECT --reject-with tcp-reset" % REJECT_CHAIN,
                "-A %s -j REJECT --reject-with %s" % (REJECT_CHAIN, self.reject_with),
            ]
        d, b = self.denied.name, self.blocked.name
        return [
            "-A %s -m conntrack --ctstate NEW -m set --match-set %s dst" % (REJECT_CHAIN, d),
            "-A %s -m conntrack --ctstate NEW -j SET --add-set %s dst" % (REJECT_CHAIN, d),
            "-A %s -m conntrack --ctstate NEW -m set --match-set %s dst,dst,src" % (REJECT_CHAIN, b),
            "-A %s -m conntrack --ctstate NEW -j SET --add-set %s dst,dst,src" % (REJECT_CHAIN, b),
            "-A %s -p tcp -j REJECT --reject-with tcp-reset" % REJECT_CHAIN,
            "-A %s -j REJECT --reject-with %s" % (REJECT_CHAIN, self.reject_with),
        ]

    def accept_rules(self, out):
        """OG-ACCEPT: count an accepted packet for its client address, then accept it.

        Reached only from OG-FORWARD's (and observe mode's OG-REJECT's) accepting rules, so only what crosses
        is counted: leaving on the outside interface by its source (og-perclient), arriving on it by its
        destination (og-perclient-in). As in reject_rules, the set match counts a known client (and accepts: one
        set lookup for nearly every packet) and the SET target adds a new one with its first packet's counters;
        no --exist, which would reset them. A full set refuses the add: the packet is still accepted, only not
        counted.
        """
        o, i = self.perclient.name, self.perclient_in.name
        return [
            "-A %s -o %s -m set --match-set %s src -j ACCEPT" % (ACCEPT_CHAIN, out, o),
            "-A %s -i %s -m set --match-set %s dst -j ACCEPT" % (ACCEPT_CHAIN, out, i),
            "-A %s -o %s -j SET --add-set %s src" % (ACCEPT_CHAIN, out, o),
            "-A %s -i %s -j SET --add-set %s dst" % (ACCEPT_CHAIN, out, i),
            "-A %s -j ACCEPT" % ACCEPT_CHAIN,
        ]

    def nat_rules(self, out):
        return ["-A %s -o %s -m set --match-set %s src -j MASQUERADE" % (NAT_CHAIN, out, self.clients.name)]


# (table, parent chain, owned chain) of the two jumps into owned chains.
JUMPS = (("filter", "FORWARD", CHAIN), ("nat", "POSTROUTING", NAT_CHAIN))
CHAINS = (("filter", CHAIN), ("filter", REJECT_CHAIN), ("filter", ACCEPT_CHAIN), ("nat", NAT_CHAIN))


def parse_client_networks(raw, ipv6):
    """The client networks, checked and canonical ('10.88.0.0/24'); raises FirewallError naming a bad one."""
    if not raw:
        raise FirewallError("no client networks given: list the networks whose egress this gateway controls "
                            "(client_networks, e.g. 10.88.0.0/24)")
    nets = []
    for value in raw:
        text = str(value).strip()
        try:
            net = ipaddress.ip_network(text)
        except ValueError:
            try:
                fixed = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise FirewallError("client network %r is not an IPv4/IPv6 network in CIDR notation; "
                                    "write it like 10.88.0.0/24" % (value,)) from None
            raise FirewallError("client network %r has host bits set; did you mean %s?" % (value, fixed)) from None
        if net.prefixlen == 0:
            raise FirewallError("client network %s would make every address a client; list the client "
                                "networks themselves" % net)
        if net.version == 6 and not ipv6:
            raise FirewallError("client network %s is IPv6 but ipv6 is off: enable ipv6 or remove it" % net)
        nets.append(net)
    return [str(n) for n in sorted(set(nets), key=lambda n: (n.version, n))]


def check_mode(mode):
    """The gateway mode, checked; raises FirewallError naming a bad one."""
    if mode not in MODES:
        raise FirewallError("gateway mode %r is not one of %s: use enforce (refuse what is not allowed) or observe "
                            "(forward it and record it as would-have-been-refused)" % (mode, ", ".join(MODES)))
    return mode


class EgressPolicy(object):
    """What the gateway enforces: which networks are clients, which interface leads out, whether IPv6 too."""

    def __init__(self, client_networks, outside_interface, ipv6=False, internal_networks=DEFAULT_INTERNAL_NETWORKS,
                 allow_dns_over_tls=False, mode="enforce"):
        self.raw_client_networks = list(client_networks or [])
        # enforce: refuse what is not allowed; observe: forward it and record it as "would have been refused".
        self.mode = mode
        self.outside_interface = outside_interface
        self.ipv6 = bool(ipv6)
        # False: clients' TCP to port 853 is refused, so names are resolved through og-dns (docs/dns.md).
        self.allow_dns_over_tls = bool(allow_dns_over_tls)
        # Prefix length limits are the server's business; here only internal destinations are refused.
        self.address_policy = AddressPolicy(internal_networks, min_prefix_v4=0, min_prefix_v6=0)

    @property
    def versions(self):
        return (4, 6) if self.ipv6 else (4,)

    def check(self):
        """Raise FirewallError naming the first bad setting."""
        parse_client_networks(self.raw_client_networks, self.ipv6)
        check_mode(self.mode)

    @property
    def client_networks(self):
        """The client networks, checked and canonical ('10.88.0.0/24'); raises FirewallError naming a bad one."""
        return parse_client_networks(self.raw_client_networks, self.ipv6)


class Step(object):
    """One change apply() makes: a readable description and the commands (argv, stdin) that make it."""

    __slots__ = ("what", "commands")

    def __init__(self, what, commands):
        self.what = what
        self.commands = commands

    def __repr__(self):
        return "Step(%r)" % self.what

    def __str__(self):
        return self.what


class PolicyPlan(object):
    """What apply() would do: the steps, and a sorted readable before/after of the owned objects."""

    def __init__(self, before, after, steps):
        self.before = before
        self.after = after
        self.steps = steps

    @property
    def changed(self):
        return bool(self.steps)

    @property
    def diff(self):
        return {"before": self.before, "after": self.after}


def lines_text(lines):
    """Sorted lines as one text, each ending in a newline ('' when there are none)."""
    return "".join(line + "\n" for line in sorted(lines))


def _host(network):
    """An ipset member for a network: a bare address for /32 and /128, else the CIDR."""
    if network.endswith("/32") and ":" not in network:
        return network[:-3]  # canonical IPv4 host (Element texts): no parsing, the common case by far
    return _parsed_host(network)


@functools.lru_cache(maxsize=1 << 18)
def _parsed_host(network):
    net = ipaddress.ip_network(network)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _merged_ranges(ranges):
    """([first, ...], [last, ...]) of the union of integer ranges, sorted and disjoint (for bisect)."""
    lows, highs = [], []
    for low, high in sorted(ranges):
        if highs and low <= highs[-1] + 1:
            highs[-1] = max(highs[-1], high)
        else:
            lows.append(low)
            highs.append(high)
    return lows, highs


def _ipv4_range(net):
    """(first, last) address of a canonical IPv4 network text as integers."""
    address, _slash, prefix = net.partition("/")
    first = int.from_bytes(socket.inet_aton(address), "big")
    return first, first if prefix == "32" else first | ((1 << (32 - int(prefix))) - 1)


def member_add(element):
    """The one `add`/`del` member for an element; a port range stays a range ('h,tcp:8000-8100')."""
    if element.port is None:
        return _host(element.net)
    proto, first, last = element.proto_ports
    return "%s,%s:%s" % (_host(element.net), proto, first if first == last else "%d-%d" % (first, last))


def kernel_members(element):
    """The member strings, as `ipset save` prints them, that an element becomes (one per port)."""
    if element.port is None:
        return [_host(element.net)]
    proto, first, last = element.proto_ports
    return ["%s,%s:%d" % (_host(element.net), proto, port) for port in range(first, last + 1)]


# One member line of `ipset save`: "add SET MEMBER [timeout N] [packets N bytes N] ..." (counters after timeout).
_SAVE_ADD = re.compile(r"^add (\S+) (\S+)(?: timeout \d+)?(?: packets (\d+) bytes (\d+))?", re.M)


# The member lines of a set with counters, without the set's name: (member, packets, bytes) as texts.
_SAVE_COUNTERS = re.compile(r"^add \S+ (\S+)(?: timeout \d+)? packets (\d+) bytes (\d+)", re.M)


# The answer of `ipset test` in interactive mode (`ipset -`), one line per test.
_TEST_ANSWER = re.compile(r"^(?:Warning: )?(\S+) is (NOT )?in set (\S+)\.$", re.M)


def _created_sets(text):
    """The names of the `create` lines (found with str.find: a regex would scan every member line for them)."""
    names = []
    pos = 0 if text.startswith("create ") else text.find("\ncreate ")
    while pos != -1:
        start = text.index("create ", pos) + 7
        end = start
        while end < len(text) and text[end] not in " \n":
            end += 1
        names.append(text[start:end])
        pos = text.find("\ncreate ", end)
    return names


def parse_save(text):
    """{set name: {member: (packets, bytes)}} from `ipset save` / `ipset list -o save` output.

    One regular-expression pass over the member lines: a scrape of 100,000 members spends its time here.
    """
    result = {name: {} for name in _created_sets(text)}
    found = _SAVE_ADD.findall(text)
    if len(result) == 1:
        # One set (`ipset list -o save NAME`, the common case): every member line is its; one comprehension.
        next(iter(result.values())).update(
            {member: (int(packets), int(bytes_)) if packets else (0, 0) for _kind, member, packets, bytes_ in found})
        return result
    for name, member, packets, bytes_ in found:
        result.setdefault(name, {})[member] = (int(packets), int(bytes_)) if packets else (0, 0)
    return result


def parse_headers(text):
    """{set name: (type, header)} from `ipset list -t` output."""
    sets, name, type_ = {}, None, None
    for line in text.splitlines():
        if line.startswith("Name: "):
            name, type_ = line[6:].strip(), None
        elif line.startswith("Type: "):
            type_ = line[6:].strip()
        elif line.startswith("Header: ") and name:
            sets[name] = (type_, line[8:].strip())
    return sets


def fold_elements(plain, ported, expected=()):
    """Elements from kernel members: plain networks, and (host, proto, port) members folded into port ranges.

    Port members that make up an expected element are read back as that element; the others are folded
    into maximal runs of consecutive ports.
    """
    # Plain members read back as the expected elements they come from, without parsing them again.
    known = {_host(e[0]): e for e in expected if e[1] is None} if plain else {}
    found = {known.get(m) or Element(m) for m in plain}
    ported = set(ported)
    claimed = set()
    for element in expected:
        if element.port is None:
            continue
        proto, first, last = element.proto_ports
        host = _host(element.net)
        wanted = {(host, proto, p) for p in range(first, last + 1)}
        if wanted <= ported:
            found.add(element)
            claimed |= wanted
    runs = {}
    for host, proto, port in ported - claimed:
        runs.setdefault((host, proto), []).append(port)
    for (host, proto), ports in runs.items():
        ports.sort()
        start = prev = ports[0]
        for port in ports[1:] + [None]:
            if port is not None and port == prev + 1:
                prev = port
                continue
            found.add(Element(host, "%d-%d/%s" % (start, prev, proto) if prev != start else "%d/%s" % (start, proto)))
            if port is not None:
                start = prev = port
    return found


def split_port_member(member):
    """'198.51.100.10,tcp:443' -> ('198.51.100.10', 'tcp', 443)."""
    host, _comma, proto_port = member.partition(",")
    proto, _colon, port = proto_port.partition(":")
    return host, proto, int(port)


class Firewall(object):
    """Reads and changes the owned ipsets and iptables chains of one gateway."""

    sys_class_net = SYS_CLASS_NET

    def __init__(self, policy, runner=None):
        self.policy = policy
        self.run = runner or CommandRunner()
        self.families = [Family(v) for v in policy.versions]
        self._internal_v4 = None  # (first, last) integers of the IPv4 internal networks, built at first use

    # ---- guard -----------------------------------------------------------------------------------
    def _guard(self):
        """Refuse to change the machine's own namespace when OG_REFUSE_ROOT_NETNS=1 (tests and the lab set it)."""
        try:
            refuse_root_netns("iptables rules and ipsets")
        except CommandError as exc:
            raise FirewallError(exc.msg)

    # ---- reading ---------------------------------------------------------------------------------
    def set_headers(self):
        """{name: (type, header)} of every existing set."""
        return parse_headers(self.run(["ipset", "list", "-t"]).stdout)

    def _save(self, names, headers):
        """{set name: {member: (packets, bytes)}} of the named sets that exist."""
        result = {}
        for name in names:
            if name in headers:
                result.update(parse_save(self.run(["ipset", "list", "-o", "save", name]).stdout))
        return result

    def _rules(self, fam, table, chain):
        """The -A lines of a chain, or None when it does not exist."""
        res = self.run([fam.iptables, "-t", table, "-S", chain], check=False)
        if res.rc != 0:
            return None
        return [line for line in res.stdout.splitlines() if line.startswith("-A ")]

    def _jump_positions(self, fam, table, parent, chain):
        rules = self._rules(fam, table, parent) or []
        return [i + 1 for i, rule in enumerate(rules) if rule == "-A %s -j %s" % (parent, chain)]

    def _sets_in_the_way(self, headers):
        """Raise FirewallError when a set with one of our names has another type, family or no counters."""
        for fam in self.families:
            for spec in fam.sets:
                for name in (spec.name, spec.temp):
                    if name not in headers:
                        continue
                    type_, header = headers[name]
                    if describe_header(spec.name, type_, header) != spec.describe():
                        raise FirewallError(
                            "ipset %s exists as %s (%s) but must be %s family %s%s; it is in the way: remove it "
                            "with `ipset destroy %s` (after removing the rules that use it)" % (
                                name, type_, header, spec.type, spec.family,
                                (" timeout %d" % spec.timeout if spec.timeout else "")
                                + (" with counters" if spec.counters else ""), name))

    def _read(self, fam, headers):
        """The owned objects of one family: {"sets": {name: description}, "clients": [...],
        "jumps": {(table, parent, chain): [positions]}, "chains": {(table, chain): [rules] or None}}."""
        state = {"sets": {}, "clients": None, "jumps": {}, "chains": {}}
        for spec in fam.sets:
            if spec.name in headers:
                state["sets"][spec.name] = describe_header(spec.name, *headers[spec.name])
        if fam.clients.name in headers:
            members = self._save([fam.clients.name], headers).get(fam.clients.name, {})
            state["clients"] = sorted(str(ipaddress.ip_network(m)) for m in members)
        for table, parent, chain in JUMPS:
            state["jumps"][(table, parent, chain)] = self._jump_positions(fam, table, parent, chain)
        for table, chain in CHAINS:
            state["chains"][(table, chain)] = self._rules(fam, table, chain)
        return state

    def state_lines(self, fam, state):
        """Readable lines (for diffs) of a state as _read() returns it."""
        lines = []
        for spec in fam.sets:
            if spec.name in state["sets"]:
                line = state["sets"][spec.name]
                if spec is fam.clients:
                    line += ": " + " ".join(state["clients"])
                lines.append(line)
        # Rules carry their position, so the sorted text still shows order.
        for (table, parent, chain), positions in state["jumps"].items():
            lines += ["%s -t %s %s rule %d: -j %s" % (fam.iptables, table, parent, pos, chain) for pos in positions]
        for (table, chain), rules in state["chains"].items():
            if rules is not None:
                lines.append("%s -t %s chain %s" % (fam.iptables, table, chain))
                prefix = "-A %s " % chain
                lines += ["%s -t %s %s rule %d: %s" % (fam.iptables, table, chain, i + 1, r[len(prefix):])
                          for i, r in enumerate(rules)]
        return lines

    def desired(self, fam):
        """The owned objects of one family as they should be, in the shape _read() returns."""
        out = self.policy.outside_interface
        return {
            "sets": {spec.name: spec.describe() for spec in fam.sets},
            "clients": sorted(self._clients(fam)),
            "jumps": {jump: [1] for jump in JUMPS},
            "chains": {("filter", CHAIN): fam.forward_rules(out, self.policy.allow_dns_over_tls),
                       ("filter", REJECT_CHAIN): fam.reject_rules(check_mode(self.policy.mode)),
                       ("filter", ACCEPT_CHAIN): fam.accept_rules(out),
                       ("nat", NAT_CHAIN): fam.nat_rules(out)},
        }

    def _clients(self, fam):
        return [n for n in self.policy.client_networks if ipaddress.ip_network(n).version == fam.version]

    # ---- checking --------------------------------------------------------------------------------
    def preflight(self):
        """Raise FirewallError naming the problem and the fix; changes nothing."""
        for binary in ["ipset"] + [b for f in self.families for b in (f.iptables, f.restore)]:
            if self.run.which(binary) is None:
                raise FirewallError("%s is missing. Is the package %s installed?" % (
                    binary, "ipset" if binary == "ipset" else "iptables"), cmd=[binary], rc=127)
        self.policy.check()
        out = self.policy.outside_interface
        if not out or not _IFNAME.match(str(out)) or not os.path.isdir(os.path.join(self.sys_class_net, out)):
            try:
                existing = sorted(os.listdir(self.sys_class_net))
            except OSError:
                existing = []
            raise FirewallError("outside interface %r does not exist on this host (interfaces: %s); set "
                                "outside_interface to the interface that leads to the internet"
                                % (out, ", ".join(existing)))
        self._sets_in_the_way(self.set_headers())

    # ---- the policy ------------------------------------------------------------------------------
    def plan(self):
        """Compare the owned objects with the desired ones; return a PolicyPlan. Changes nothing."""
        headers = self.set_headers()
        self._sets_in_the_way(headers)
        before, after, steps = [], [], []
        for fam in self.families:
            have, want = self._read(fam, headers), self.desired(fam)
            before += self.state_lines(fam, have)
            after += self.state_lines(fam, want)
            steps += self._steps(fam, have, want)
        return PolicyPlan(lines_text(before), lines_text(after), steps)

    def _steps(self, fam, have, want):
        """The steps that turn one family's state `have` into `want`, in dependency order."""
        steps = []
        missing = [s for s in fam.sets if s is not fam.clients and s.name not in have["sets"]]
        if missing:
            steps.append(Step("create ipsets %s" % ", ".join(s.name for s in missing), [
                (["ipset", "restore", "-exist"], "".join(s.create_line() + "\n" for s in missing))]))
        if have["clients"] != want["clients"]:
            spec = fam.clients
            batch = [spec.create_line(), spec.create_line(spec.temp), "flush %s" % spec.temp]
            batch += ["add %s %s" % (spec.temp, n) for n in want["clients"]]
            batch += ["swap %s %s" % (spec.temp, spec.name), "destroy %s" % spec.temp]
            steps.append(Step("set %s to %s" % (spec.name, " ".join(want["clients"])), [
                (["ipset", "restore", "-exist"], "".join(line + "\n" for line in batch))]))
        for table in ("filter", "nat"):
            chains = [c for t, c in CHAINS if t == table]
            if any(have["chains"][(table, c)] != want["chains"][(table, c)] for c in chains):
                # Declaring a chain in iptables-restore --noflush empties it; its rules follow in the same commit.
                text = "*%s\n%s%sCOMMIT\n" % (
                    table, "".join(":%s - [0:0]\n" % c for c in chains),
                    "".join(r + "\n" for c in chains for r in want["chains"][(table, c)]))
                steps.append(Step("load %s %s: %s" % (fam.iptables, table, ", ".join(chains)),
                                  [([fam.restore, "--noflush"], text)]))
        for jump in JUMPS:
            table, parent, chain = jump
            if have["jumps"][jump] != want["jumps"][jump]:
                commands = [([fam.iptables, "-t", table, "-D", parent, "-j", chain], None)
                            for _position in have["jumps"][jump]]
                commands.append(([fam.iptables, "-t", table, "-I", parent, "1", "-j", chain], None))
                steps.append(Step("%s: jump from %s to %s at position 1" % (fam.iptables, parent, chain), commands))
        return steps

    def apply(self, plan=None):
        """Put the policy in place (idempotent); return True if anything changed."""
        self._guard()
        plan = plan or self.plan()
        for step in plan.steps:
            for argv, stdin in step.commands:
                self.run(argv, stdin=stdin)
        return plan.changed

    def state(self):
        """The owned objects as they are now, sorted readable text ('' when there are none)."""
        headers = self.set_headers()
        return lines_text([line for fam in self.families for line in self.state_lines(fam, self._read(fam, headers))])

    def remove(self):
        """Remove exactly the owned jumps, chains and sets (state absent); return True if anything was there."""
        self._guard()
        headers = self.set_headers()
        changed = False
        for fam in self.families:
            for table, parent, chain in JUMPS:
                for _position in self._jump_positions(fam, table, parent, chain):
                    self.run([fam.iptables, "-t", table, "-D", parent, "-j", chain])
                    changed = True
            existing = [(table, chain) for table, chain in CHAINS if self._rules(fam, table, chain) is not None]
            # Flush all first: OG-FORWARD refers to OG-REJECT.
            for table, chain in existing:
                self.run([fam.iptables, "-t", table, "-F", chain])
            for table, chain in existing:
                self.run([fam.iptables, "-t", table, "-X", chain])
                changed = True
            for spec in fam.sets:
                for name in (spec.name, spec.temp):
                    if name in headers:
                        self.run(["ipset", "destroy", name])
                        changed = True
        return changed

    # ---- allowed elements ------------------------------------------------------------------------
    def _family(self, version):
        for fam in self.families:
            if fam.version == version:
                return fam
        return None

    def _internal_ranges(self):
        """The IPv4 internal networks as sorted, disjoint integer ranges ([firsts], [lasts]), built once."""
        if self._internal_v4 is None:
            self._internal_v4 = _merged_ranges([(int(n.network_address), int(n.broadcast_address))
                                                for n in self.policy.address_policy.internal if n.version == 4])
        return self._internal_v4

    def is_internal(self, element):
        """AddressPolicy.is_internal of an element; IPv4 by integer ranges (ipaddress costs ~30 us an element)."""
        if ":" in element[0]:
            return self.policy.address_policy.is_internal(element[0])
        lows, highs = self._internal_ranges()
        first, last = _ipv4_range(element[0])
        # The last internal range starting at or below `last` is the only one that can overlap.
        i = bisect.bisect_right(lows, last) - 1
        return i >= 0 and highs[i] >= first

    def accept(self, elements):
        """Split elements into (kept, skipped): skipped are inside internal networks or of a family that is off."""
        kept, skipped = [], []
        v4 = any(fam.version == 4 for fam in self.families)
        v6 = any(fam.version == 6 for fam in self.families)
        lows, highs = self._internal_ranges()
        right = bisect.bisect_right
        for element in elements:
            if not isinstance(element, Element):
                element = Element.parse(element)
            net = element[0]
            if ":" in net:
                ok = v6 and not self.policy.address_policy.is_internal(net)
            else:
                first, last = _ipv4_range(net)  # inlined is_internal: this loop runs once per snapshot element
                i = right(lows, last) - 1
                ok = v4 and not (i >= 0 and highs[i] >= first)
            (kept if ok else skipped).append(element)
        return kept, skipped

    def members(self):
        """{set name: {member: (packets, bytes)}} of the allowed sets as they are in the kernel."""
        headers = self.set_headers()
        return self._save([s.name for f in self.families for s in f.element_sets], headers)

    def elements(self, expected=None):
        """The allowed elements in the kernel: those in both the out sets and the in (return traffic) sets.

        An element missing from either direction is not really allowed, so it is not reported (drift shows).
        Port members are folded back into the `expected` elements they make up, the rest into maximal ranges.
        """
        saved = self.members()
        expected = [e if isinstance(e, Element) else Element.parse(e) for e in (expected or ())]
        plain, ported, plain_in, ported_in = set(), set(), set(), set()
        for fam in self.families:
            plain |= set(saved.get(fam.allow.name, {}))
            ported |= {split_port_member(m) for m in saved.get(fam.allowp.name, {})}
            plain_in |= set(saved.get(fam.allow_in.name, {}))
            ported_in |= {split_port_member(m) for m in saved.get(fam.allowp_in.name, {})}
        return fold_elements(plain & plain_in, ported & ported_in, expected)

    def replace(self, elements):
        """Make the allowed sets hold exactly `elements`, atomically per set (temporary set + swap + destroy).

        Counters of members that stay are carried over. Returns the skipped elements.
        """
        self._guard()
        kept, skipped = self.accept(elements)
        saved = self.members()
        batch = []
        for fam in self.families:
            plain = [member_add(e) for e in kept if e.version == fam.version and e.port is None]
            ported = [e for e in kept if e.version == fam.version and e.port is not None]
            ported_add = [member_add(e) for e in ported]
            for spec, members in ((fam.allow, plain), (fam.allow_in, plain),
                                  (fam.allowp, ported_add), (fam.allowp_in, ported_add)):
                temp = spec.temp
                # Sized for its members up front: growing a hash from 1024 buckets to 100,000 members costs 30%.
                batch += [spec.create_line(), spec.create_line(temp, hashsize=_hashsize(len(members))),
                          "flush %s" % temp]
                prefix = "add %s " % temp
                batch += [prefix + m for m in members]
                # Re-adding a member with -exist sets its counters; only counted members need it.
                counted = {m: pb for m, pb in saved.get(spec.name, {}).items() if pb[0] or pb[1]}
                if counted:
                    wanted = set(members) if spec in (fam.allow, fam.allow_in) else {
                        m for e in ported for m in kernel_members(e)}
                    batch += ["%s%s packets %d bytes %d" % (prefix, m, pb[0], pb[1])
                              for m, pb in sorted(counted.items()) if m in wanted]
                batch += ["swap %s %s" % (temp, spec.name), "destroy %s" % temp]
        batch.append("")
        self.run(["ipset", "restore", "-exist"], stdin="\n".join(batch))
        return skipped

    def update(self, add=(), remove=(), keep=()):
        """Remove, then add elements in one `ipset restore -exist` batch; returns the skipped elements.

        Removing an element removes its members; members it shares with an element in `keep` (the elements
        that stay, e.g. an overlapping port range) are added back in the same batch.
        """
        self._guard()
        kept, skipped = self.accept(add)
        gone = [e if isinstance(e, Element) else Element.parse(e) for e in remove]
        gone = [e for e in gone if self._family(e.version) is not None]
        if not kept and not gone:
            return skipped
        batch = [spec.create_line() for fam in self.families for spec in fam.element_sets]
        gone_members = {m for e in gone for m in kernel_members(e)}
        staying = [e if isinstance(e, Element) else Element.parse(e) for e in keep]
        shared = [e for e in self.accept(staying)[0] if gone_members.intersection(kernel_members(e))]
        for verb, elements in (("del", gone), ("add", kept + shared)):
            for element in elements:
                for spec in self._family(element.version).sets_for(element):
                    batch.append("%s %s %s" % (verb, spec.name, member_add(element)))
        self.run(["ipset", "restore", "-exist"], stdin="".join(line + "\n" for line in batch))
        return skipped

    def check_update(self, add=(), remove=(), keep=()):
        """True when the kernel holds every added element whole and none of the removed ones, in both directions.

        The verify of a delta: one `ipset -` run testing only the members that changed (a whole read-back of
        100,000 members takes half a second). Members a removed element shares with an element in `keep` are
        not tested. False means "not proven", e.g. a removed host still covered by a network in the set (ipset
        tests a host against the networks holding it): read the whole set back then.
        """
        kept = self.accept(add)[0]
        gone = self.accept(remove)[0]
        shared = {m for e in self.accept(keep)[0] for m in kernel_members(e)}
        tests = []
        for elements, wanted in ((kept, True), (gone, False)):
            for element in elements:
                for spec in self._family(element.version).sets_for(element):
                    tests += [(spec.name, m, wanted) for m in kernel_members(element)
                              if wanted or m not in shared]
        if not tests:
            return True
        if len(tests) > CHECK_MAX:
            return False  # wide port ranges: testing each port costs more than reading the sets back
        res = self.run(["ipset", "-"], stdin="".join("test %s %s\n" % (name, m) for name, m, _w in tests),
                       check=False)
        # One answer per test line, on stderr: "Warning: M is in set S." or "M is NOT in set S.".
        found = {(name, member): not not_in for member, not_in, name in _TEST_ANSWER.findall(res.stderr)}
        return all(found.get((name, m)) is wanted for name, m, wanted in tests)

    def counters(self, elements=None):
        """{Element: Counters} of the elements in the out sets, read from the kernel now; port ranges are summed.

        Plain members are read back as the `elements` (expected) they come from without parsing them again,
        which keeps a scrape of 100,000 addresses cheap; members nobody expects are parsed and reported too. The
        two big sets (plain out and in) are read as text with one regular expression each and their numbers
        converted once, into the result (no per-set {member: (packets, bytes)} of ints in between).
        """
        headers = self.set_headers()
        expected = [e if isinstance(e, Element) else Element.parse(e) for e in (elements or ())]
        known = {_host(e[0]): e for e in expected if e[1] is None}
        get = known.get
        result = {}
        zero = ("0", "0")
        for fam in self.families:
            outs = self._saved_counters(fam.allow.name, headers)
            ins = {member: (packets, bytes_) for member, packets, bytes_ in self._saved_counters(fam.allow_in.name,
                                                                                                 headers)}
            in_get = ins.get
            for member, out_packets, out_bytes in outs:
                in_packets, in_bytes = in_get(member, zero)
                result[get(member) or Element(member)] = _counters(
                    (int(out_bytes), int(out_packets), int(in_bytes), int(in_packets)))
        saved = self._save([s.name for f in self.families for s in (f.allowp, f.allowp_in)], headers)
        ported = set()
        for fam in self.families:
            ported |= {split_port_member(m) for m in saved.get(fam.allowp.name, {})}
        for element in fold_elements((), ported, expected):
            out_set, in_set = self._family(element.version).sets_for(element)
            out_members, in_members = saved.get(out_set.name, {}), saved.get(in_set.name, {})
            total = [0, 0, 0, 0]
            for member in kernel_members(element):
                p, b = out_members.get(member, (0, 0))
                total[0] += b
                total[1] += p
                p, b = in_members.get(member, (0, 0))
                total[2] += b
                total[3] += p
            result[element] = _counters(total)
        return result

    def _saved_counters(self, name, headers):
        """[(member, packets, bytes)] as texts of one counting set (`ipset list -o save`), [] when it is missing."""
        if name not in headers:
            return []
        return _SAVE_COUNTERS.findall(self.run(["ipset", "list", "-o", "save", name]).stdout)

    def rejected(self):
        """(packets, bytes) rejected in OG-REJECT so far, all families together (the REJECT rules only)."""
        packets = bytes_ = 0
        for fam in self.families:
            res = self.run([fam.iptables, "-t", "filter", "-L", REJECT_CHAIN, "-v", "-x", "-n"], check=False)
            for line in res.stdout.splitlines()[2:]:
                parts = line.split()
                if len(parts) > 2 and parts[0].isdigit() and parts[2] == "REJECT":
                    packets += int(parts[0])
                    bytes_ += int(parts[1])
        return packets, bytes_

    def denied(self):
        """{address: (packets, bytes)} of new connection attempts refused per destination, all families.

        Read from the og-denied sets; an address is dropped DENIED_TIMEOUT after its first recorded attempt and
        at most DENIED_MAXELEM addresses per family are recorded (later ones are still refused, not recorded).
        """
        result = {}
        for fam in self.families:
            res = self.run(["ipset", "list", "-o", "save", fam.denied.name], check=False)
            if res.rc == 0:  # not there before apply() or after remove(): nothing denied to report
                result.update(parse_save(res.stdout).get(fam.denied.name, {}))
        return result

    def blocked(self):
        """[Attempt] of the new connections refused (enforce) or let through in observe mode, per (client,
        destination, protocol, port), all families, read from the og-blocked and og-observed sets.

        `age` is the seconds since the first recorded attempt (BLOCKED_TIMEOUT less the element's remaining
        timeout: the SET target never refreshes it). At most BLOCKED_MAXELEM per set and family are recorded.
        """
        result = []
        for fam in self.families:
            for spec, observed in ((fam.blocked, False), (fam.observed, True)):
                res = self.run(["ipset", "list", "-o", "save", spec.name], check=False)
                if res.rc != 0:  # not there before apply() or after remove()
                    continue
                for member, timeout, packets, bytes_ in _SAVE_TRIPLE.findall(res.stdout):
                    dst, proto_port, src = member.split(",")
                    proto, _colon, port = proto_port.partition(":")
                    age = max(0, BLOCKED_TIMEOUT - int(timeout)) if timeout else 0
                    result.append(Attempt(src, dst, proto, port, int(packets), int(bytes_), age, observed))
        return result

    def client_counters(self):
        """([ClientCounters] by client address, [names of full per-client sets]), all families, read now.

        One `ipset -` run lists every per-client set (a set that is missing would end the run's listing, so only
        existing ones are named). A client is reported when either direction holds it. A set holding its
        maxelem elements is full: clients not in it yet are not counted.
        """
        headers = self.set_headers()
        names = [spec.name for fam in self.families for spec in fam.client_sets if spec.name in headers]
        if not names:  # before apply() or after remove(): nothing counted
            return [], []
        text = self.run(["ipset", "-"], stdin="".join("list -o save %s\n" % name for name in names)).stdout
        outs = {fam.perclient.name for fam in self.families}
        rows, sizes = {}, dict.fromkeys(names, 0)
        for name, member, timeout, packets, bytes_ in _SAVE_CLIENT.findall(text):
            sizes[name] += 1
            age = max(0, CLIENT_TIMEOUT - int(timeout)) if timeout else 0
            row = rows.setdefault(member, [0, 0, 0, 0, None, None])
            if name in outs:
                row[0], row[1], row[4] = int(bytes_), int(packets), age
            else:
                row[2], row[3], row[5] = int(bytes_), int(packets), age
        limits = {name: int(maxelem) for name, maxelem in _SAVE_MAXELEM.findall(text)}
        full = [name for name in names if sizes[name] >= limits.get(name, CLIENT_MAXELEM)]
        return [ClientCounters(member, *row) for member, row in sorted(rows.items())], full


# The member lines of the per-client sets in `ipset -` output: (set, member, timeout, packets, bytes) as texts.
_SAVE_CLIENT = re.compile(r"^add (\S+) (\S+)(?: timeout (\d+))? packets (\d+) bytes (\d+)", re.M)
# A set's create line there (after the interactive prompt "ipset> "): (name, maxelem).
_SAVE_MAXELEM = re.compile(r"create (\S+) \S+ [^\n]*?maxelem (\d+)")


class ClientCounters(tuple):
    """One client's counted traffic: (client, out_bytes, out_packets, in_bytes, in_packets, out_age, in_age).

    out = what the client sent through accepting rules, in = the replies it got. An age is the seconds since the
    direction's element was created (its first packet: the counters count from there), None when not counted.
    """

    __slots__ = ()
    FIELDS = ("client", "out_bytes", "out_packets", "in_bytes", "in_packets", "out_age", "in_age")

    def __new__(cls, client, out_bytes=0, out_packets=0, in_bytes=0, in_packets=0, out_age=None, in_age=None):
        return tuple.__new__(cls, (client, out_bytes, out_packets, in_bytes, in_packets, out_age, in_age))

    client = property(operator.itemgetter(0))
    out_bytes = property(operator.itemgetter(1))
    out_packets = property(operator.itemgetter(2))
    in_bytes = property(operator.itemgetter(3))
    in_packets = property(operator.itemgetter(4))
    out_age = property(operator.itemgetter(5))
    in_age = property(operator.itemgetter(6))

    def as_dict(self):
        return dict(zip(self.FIELDS, self))


# One member line of a hash:ip,port,ip set with timeout and counters: (member, timeout, packets, bytes) as texts.
_SAVE_TRIPLE = re.compile(r"^add \S+ (\S+,\S+,\S+)(?: timeout (\d+))? packets (\d+) bytes (\d+)", re.M)


class Attempt(tuple):
    """One recorded attempt: (client, destination, proto, port, packets, bytes, age seconds, observed).

    `port` is a text: the destination port for tcp/udp/sctp, "type/code" for icmp, "0" for other protocols.
    """

    __slots__ = ()
    FIELDS = ("client", "destination", "proto", "port", "packets", "bytes", "age", "observed")

    def __new__(cls, client, destination, proto, port, packets, bytes_, age, observed):
        return tuple.__new__(cls, (client, destination, proto, port, packets, bytes_, age, observed))

    client = property(operator.itemgetter(0))
    destination = property(operator.itemgetter(1))
    proto = property(operator.itemgetter(2))
    port = property(operator.itemgetter(3))
    packets = property(operator.itemgetter(4))
    bytes = property(operator.itemgetter(5))
    age = property(operator.itemgetter(6))
    observed = property(operator.itemgetter(7))

    @property
    def key(self):
        """What identifies an attempt's element: (client, destination, proto, port, observed)."""
        return (self[0], self[1], self[2], self[3], self[7])

    def as_dict(self):
        return dict(zip(self.FIELDS, self))


__all__ = ["Attempt", "ClientCounters", "CommandError", "Counters", "EgressPolicy", "Firewall", "FirewallError",
           "PolicyPlan", "Step", "TargetError"]
