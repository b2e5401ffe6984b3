# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address policy: which networks are internal, and how operator targets are parsed.

One implementation shared by the server (refusing entries), the gateway agent
(defence in depth) and og_public_routes (the public ranges are the complement
of the internal ones). Pure functions, no Ansible imports.
"""

from __future__ import annotations

import ipaddress
import re

# Python's is_private is not used on purpose: it also covers the documentation
# ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) that the lab uses as
# "public" addresses. This list is explicit and configurable instead.
DEFAULT_INTERNAL_NETWORKS_V4 = (
    "0.0.0.0/8",        # "this" network
    "10.0.0.0/8",       # RFC 1918
    "100.64.0.0/10",    # CGNAT, RFC 6598
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local
    "172.16.0.0/12",    # RFC 1918
    "192.0.0.0/24",     # IETF protocol assignments
    "192.168.0.0/16",   # RFC 1918
    "198.18.0.0/15",    # benchmarking
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved and limited broadcast
)
DEFAULT_INTERNAL_NETWORKS_V6 = (
    "::/128",           # unspecified
    "::1/128",          # loopback
    "::ffff:0:0/96",    # IPv4-mapped
    "64:ff9b:1::/48",   # local-use NAT64
    "100::/64",         # discard-only
    "fc00::/7",         # unique local
    "fe80::/10",        # link-local
    "ff00::/8",         # multicast
)
DEFAULT_INTERNAL_NETWORKS = DEFAULT_INTERNAL_NETWORKS_V4 + DEFAULT_INTERNAL_NETWORKS_V6


class EmbeddingForm(object):
    """An IPv6 prefix whose addresses carry an IPv4 address: where it sits (bit offset, bit-inverted or not)."""

    __slots__ = ("name", "prefix", "offsets")

    def __init__(self, name, prefix, offsets):
        self.name = name
        self.prefix = ipaddress.ip_network(prefix)
        self.offsets = offsets  # None: the position depends on the translator (RFC 6052 prefix lengths)


EMBEDDING_FORMS = (
    EmbeddingForm("NAT64 well-known prefix", "64:ff9b::/96", ((96, False),)),           # RFC 6052
    EmbeddingForm("NAT64 local-use prefix", "64:ff9b:1::/48", None),                    # RFC 8215
    EmbeddingForm("6to4 prefix", "2002::/16", ((16, False),)),                          # RFC 3056
    EmbeddingForm("Teredo prefix", "2001::/32", ((32, False), (96, True))),             # RFC 4380: server, client
    EmbeddingForm("IPv4-mapped prefix", "::ffff:0:0/96", ((96, False),)),               # RFC 4291
    EmbeddingForm("IPv4-translated prefix", "::ffff:0:0:0/96", ((96, False),)),         # RFC 2765
    EmbeddingForm("IPv4-compatible prefix", "::/96", ((96, False),)),                   # RFC 4291, deprecated
)


def embedded_ipv4(network, offset, inverted=False):
    """The IPv4 network carried at bit `offset` of an IPv6 network (bits the prefix leaves open stay open)."""
    length = max(0, min(32, network.prefixlen - offset))
    bits = (int(network.network_address) >> (96 - offset)) & 0xFFFFFFFF
    if inverted:  # Teredo stores the client address with every bit flipped
        bits ^= 0xFFFFFFFF
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    return ipaddress.IPv4Network((bits & mask, length))


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class TargetError(ValueError):
    """A target that is not acceptable; the message names the value and the fix."""


def parse_networks(values, what="internal network"):
    """Parse a list of CIDR strings into ip_network objects, naming the bad one."""
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise TargetError("%s %r is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)" % (what, value))
    return nets


def normalise_domain(text):
    """Return the canonical form of a domain name (lower case, IDNA, no trailing dot) or raise TargetError."""
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetError("%r is not a valid domain name" % text)
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise TargetError(
            "%r is neither an IPv4/IPv6 address, a CIDR, nor a fully qualified domain name "
            "(e.g. 198.51.100.10, 198.51.100.0/24 or api.example.com)" % text)
    if labels[-1].isdigit():
        raise TargetError("%r looks like an IP address but is not a valid one" % text)
    return name


def normalise_wildcard(text):
    """Canonical form of a wildcard domain '*.example.com' (lower case, IDNA, no trailing dot) or TargetError.

    The star stands for one or more whole labels and must be the first label on its own; what follows must
    be a name of at least two labels (so '*' and '*.com' are refused: a whole top-level domain is no entry).
    """
    raw = text.strip()
    fix = "write the star as the whole first label of a name of at least two labels, e.g. *.example.com"
    if raw.rstrip(".") in ("*", ""):
        raise TargetError("%r would allow every name; %s" % (text, fix))
    labels = raw.split(".")
    if labels[0] != "*" or any("*" in label for label in labels[1:]):
        where = ("shares a label with other characters" if any("*" in label and label != "*" for label in labels)
                 else "is not the first label, or appears more than once")
        raise TargetError("%r: the star %s; %s" % (text, where, fix))
    rest = raw[2:]
    if len(rest.rstrip(".").split(".")) < 2:
        raise TargetError("%r would allow a whole top-level domain; %s" % (text, fix))
    try:
        base = normalise_domain(rest)
    except TargetError:
        raise TargetError("%r: %r after the star is not a valid domain name; %s" % (text, rest, fix))
    if len(base) + 2 > 253:
        raise TargetError("%r is longer than 253 characters" % text)
    return "*." + base


def matches(pattern, name):
    """True if the DNS name `name` is covered by the entry `pattern`, both in any case, trailing dot or not.

    An exact pattern 'example.com' matches only itself; '*.example.com' matches one or more labels before
    example.com ('a.example.com', 'a.b.example.com') and never example.com itself.
    """
    pattern = pattern.rstrip(".").lower()
    name = name.rstrip(".").lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]  # '.example.com'
        return len(name) > len(suffix) and name.endswith(suffix) and not name[:-len(suffix)].endswith(".")
    return name == pattern


class Target(object):
    """A parsed allowlist target: kind is 'ip', 'cidr' or 'domain'; value is canonical.

    A wildcard domain ('*.example.com') has kind 'domain' and wildcard True; its value keeps the star.
    """

    __slots__ = ("kind", "value", "wildcard")

    def __init__(self, kind, value, wildcard=False):
        self.kind = kind
        self.value = value
        self.wildcard = bool(wildcard)

    @property
    def network(self):
        """The ip_network of an address or CIDR target (None for a domain)."""
        return None if self.kind == "domain" else ipaddress.ip_network(self.value)

    def __eq__(self, other):
        return isinstance(other, Target) and (self.kind, self.value) == (other.kind, other.value)

    def __hash__(self):
        return hash((self.kind, self.value))

    def __repr__(self):
        if self.wildcard:
            return "Target(%r, %r, wildcard=True)" % (self.kind, self.value)
        return "Target(%r, %r)" % (self.kind, self.value)


class AddressPolicy(object):
    """Decides whether an address, network or target may be allowed out."""

    def __init__(self, internal_networks=DEFAULT_INTERNAL_NETWORKS, min_prefix_v4=8, min_prefix_v6=16):
        self.internal = parse_networks(internal_networks)
        self.min_prefix = {4: int(min_prefix_v4), 6: int(min_prefix_v6)}

    def internal_network_of(self, network):
        """Return the first internal network that overlaps `network` (address or CIDR), or None."""
        net = ipaddress.ip_network(network, strict=False)
        for internal in self.internal:
            if internal.version == net.version and internal.overlaps(net):
                return internal
        return None

    def refusal(self, network):
        """Why `network` (address or CIDR) may never be allowed out, or None: one text for entries and answers.

        An IPv6 network is also refused when the IPv4 addresses it embeds (NAT64, 6to4, Teredo, IPv4-compatible,
        -mapped or -translated) touch an internal network: a relay would carry the packet there.
        """
        net = ipaddress.ip_network(network, strict=False)
        internal = self.internal_network_of(net)
        if internal is not None:
            return "is inside or overlaps the internal network %s" % internal
        if net.version == 4:
            return None
        for form in EMBEDDING_FORMS:
            if not net.overlaps(form.prefix):
                continue
            if form.offsets is None:
                return ("is in the %s %s, whose embedded IPv4 address depends on the translator's configuration"
                        % (form.name, form.prefix))
            part = form.prefix if form.prefix.subnet_of(net) else net
            for offset, inverted in form.offsets:
                embedded = embedded_ipv4(part, offset, inverted)
                internal = self.internal_network_of(embedded)
                if internal is not None:
                    return ("embeds the IPv4 %s %s (%s, %s), which is inside or overlaps the internal network %s"
                            % ("address" if embedded.prefixlen == 32 else "network",
                               embedded.network_address if embedded.prefixlen == 32 else embedded,
                               form.name, form.prefix, internal))
        return None

    def is_internal(self, address):
        """True if the address or network touches an internal network, directly or through an embedded IPv4."""
        return self.refusal(address) is not None

    def check_network(self, network, text=None):
        """Raise TargetError unless `network` may be allowed out."""
        text = text if text is not None else str(network)
        net = ipaddress.ip_network(network, strict=False)
        minimum = self.min_prefix[net.version]
        if net.prefixlen < minimum:
            raise TargetError(
                "%s is too broad: prefixes shorter than /%d are refused for IPv%d; "
                "add narrower networks instead" % (text, minimum, net.version))
        reason = self.refusal(net)
        if reason is not None:
            raise TargetError("%s %s; internal addresses are never allowed through the gateway" % (text, reason))

    def parse_target(self, text):
        """Parse and check an operator's target: an IPv4/IPv6 address, a CIDR, a domain name or '*.domain'."""
        if not isinstance(text, str) or not text.strip():
            raise TargetError("target must be a non-empty string: an IP address, a CIDR or a domain name")
        raw = text.strip()
        if len(raw) > 253:
            raise TargetError("target %r... is longer than 253 characters" % raw[:40])
        if "*" in raw:
            return Target("domain", normalise_wildcard(raw), wildcard=True)
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            if "/" in raw or ":" in raw or re.match(r"^[0-9.]+$", raw):
                raise TargetError(
                    "%r is not a valid IP address or CIDR (e.g. 198.51.100.10 or 198.51.100.0/24); "
                    "a CIDR must not have host bits beyond its prefix" % raw
                    if "/" not in raw else
                    "%r is not a valid CIDR (e.g. 198.51.100.0/24)" % raw)
            return Target("domain", normalise_domain(raw))
        if "/" in raw and ipaddress.ip_network(raw, strict=False).network_address != ipaddress.ip_interface(raw).ip:
            raise TargetError("%r has host bits set; did you mean %s?" % (raw, net))
        self.check_network(net, raw)
        if net.prefixlen == net.max_prefixlen:
            return Target("ip", str(net.network_address))
        return Target("cidr", str(net))


def parse_port_spec(text):
    """Parse '443/tcp', '53/udp' or '8000-8100/tcp' into (proto, first, last); raise TargetError."""
    match = re.match(r"^\s*(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)\s*$", str(text).lower())
    if not match:
        raise TargetError("port %r is not of the form 443/tcp, 53/udp or 8000-8100/tcp" % (text,))
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if not (1 <= first <= last <= 65535):
        raise TargetError("port range %r must lie within 1-65535 with the first port not above the last" % (text,))
    return match.group(3), first, last


def format_port_spec(proto, first, last):
    """Canonical text of a port spec: '443/tcp' or '8000-8100/tcp'."""
    return ("%d/%s" % (first, proto)) if first == last else ("%d-%d/%s" % (first, last, proto))


def public_networks(internal_networks, version=4):
    """The exact complement of the internal networks within one address family, as minimal prefixes."""
    universe = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    internal = sorted(ipaddress.collapse_addresses(
        n for n in parse_networks(internal_networks) if n.version == version))
    remaining = [universe]
    for net in internal:
        nxt = []
        for block in remaining:
            if net.subnet_of(block):
                nxt.extend(block.address_exclude(net))
            elif not block.subnet_of(net):
                nxt.append(block)
        remaining = nxt
    return sorted(ipaddress.collapse_addresses(remaining))
