# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Elements: what a gateway puts in its sets ('198.51.100.10/32' or '198.51.100.10/32 443/tcp')."""

from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
import json
import socket

from .og_netpolicy import (DEFAULT_INTERNAL_NETWORKS, AddressPolicy, TargetError, format_port_spec, parse_networks,
                           parse_port_spec)


_PREFIXES = {str(n): n for n in range(33)}


def _ipv4_network(net):
    """The canonical text of an IPv4 address or network without host bits, or None (then ipaddress decides).

    ipaddress.ip_network costs ~10 us a call: most of a 100,000-address snapshot went there. inet_aton also
    reads forms like '1.2.3' or '010.0.0.1'; the round trip through inet_ntoa keeps only the canonical one.
    """
    if not isinstance(net, str):
        return None
    address, slash, prefix = net.partition("/")
    try:
        packed = socket.inet_aton(address)
    except (OSError, ValueError):  # ValueError: an embedded NUL character
        return None
    if socket.inet_ntoa(packed) != address:
        return None
    if not slash:
        return net + "/32"
    length = _PREFIXES.get(prefix)
    if length is None or int.from_bytes(packed, "big") & ((1 << (32 - length)) - 1):
        return None
    return net


@functools.lru_cache(maxsize=1 << 18)
def _canonical(net, port):
    """(canonical network, canonical port spec or None); cached: gateways see the same texts again and again."""
    network = _ipv4_network(net) or str(ipaddress.ip_network(net, strict=False))
    return network, (format_port_spec(*parse_port_spec(port)) if port else None)


@functools.lru_cache(maxsize=4096)
def _port_spec(spec):
    return parse_port_spec(spec)


class Element(tuple):
    """An allowed network, optionally scoped to one protocol and port range. Immutable and hashable."""

    __slots__ = ()

    def __new__(cls, net, port=None):
        return tuple.__new__(cls, _canonical(net, port or None))

    @classmethod
    def parse(cls, text):
        """Parse the canonical text form; raise TargetError naming the value."""
        if not isinstance(text, str):
            raise TargetError("element %r is not a string" % (text,))
        if " " not in text:
            network = _ipv4_network(text)
            if network is not None:  # the common case, without the generic path's calls
                return tuple.__new__(cls, (network, None))
        parts = text.split()
        if len(parts) not in (1, 2):
            raise TargetError("element %r is not of the form '<network>' or '<network> <port>/<proto>'" % text)
        try:
            return cls(parts[0], parts[1] if len(parts) == 2 else None)
        except ValueError as exc:
            if isinstance(exc, TargetError):
                raise
            raise TargetError("element %r has an invalid network: %s" % (text, exc))

    @property
    def net(self):
        return self[0]

    @property
    def port(self):
        return self[1]

    @property
    def network(self):
        return ipaddress.ip_network(self[0])

    @property
    def version(self):
        return 6 if ":" in self[0] else 4

    @property
    def proto_ports(self):
        """(proto, first, last) of a port-scoped element, else None."""
        return _port_spec(self[1]) if self[1] else None

    @property
    def text(self):
        return self[0] if self[1] is None else "%s %s" % self

    def __repr__(self):
        return "Element(%r)" % self.text

    def __str__(self):
        return self.text


def digest(elements):
    """SHA-256 over the sorted canonical texts, each followed by a newline (docs/protocol.md)."""
    h = hashlib.sha256()
    for text in sorted(e.text if isinstance(e, Element) else Element.parse(e).text for e in elements):
        h.update(text.encode("ascii") + b"\n")
    return h.hexdigest()


def digest_canonical(texts):
    """digest() of texts that are already canonical (Element.text), without parsing them again: the server's
    stored elements and the agent's applied set are, and at 100,000 elements parsing is most of the cost."""
    return digest_sorted(sorted(texts))


def digest_sorted(texts):
    """digest_canonical() of canonical texts already in sorted order (one hash update: 100,000 are ~5 ms)."""
    if not texts:
        return hashlib.sha256(b"").hexdigest()
    return hashlib.sha256(("\n".join(texts) + "\n").encode("ascii")).hexdigest()


class SortedTexts(object):
    """Canonical texts kept sorted in blocks, each block's part of the digest input cached: after a change,
    digest() joins one block again instead of all 100,000 texts (it is digest_canonical() of the texts)."""

    BLOCK = 1000

    def __init__(self, texts=()):
        items = sorted(texts)
        self._blocks = [items[i:i + self.BLOCK] for i in range(0, len(items), self.BLOCK)]
        self._maxes = [block[-1] for block in self._blocks]
        self._joined = [None] * len(self._blocks)
        self._len = len(items)

    def __len__(self):
        return self._len

    def __iter__(self):
        for block in self._blocks:
            yield from block

    def add(self, text):
        """Insert a text that is not there yet."""
        if not self._blocks:
            self._blocks, self._maxes, self._joined = [[text]], [text], [None]
            self._len = 1
            return
        i = min(bisect.bisect_left(self._maxes, text), len(self._blocks) - 1)
        block = self._blocks[i]
        bisect.insort(block, text)
        self._maxes[i], self._joined[i] = block[-1], None
        if len(block) > 2 * self.BLOCK:
            half = len(block) // 2
            self._blocks[i:i + 1] = [block[:half], block[half:]]
            self._maxes[i:i + 1] = [block[half - 1], block[-1]]
            self._joined[i:i + 1] = [None, None]
        self._len += 1

    def discard(self, text):
        """Remove a text if it is there."""
        i = bisect.bisect_left(self._maxes, text)
        if i == len(self._blocks):
            return
        block = self._blocks[i]
        j = bisect.bisect_left(block, text)
        if j == len(block) or block[j] != text:
            return
        del block[j]
        self._len -= 1
        if block:
            self._maxes[i], self._joined[i] = block[-1], None
        else:
            del self._blocks[i], self._maxes[i], self._joined[i]

    def digest(self):
        """digest_canonical() of the texts."""
        h = hashlib.sha256()
        for i, block in enumerate(self._blocks):
            joined = self._joined[i]
            if joined is None:
                joined = self._joined[i] = ("\n".join(block) + "\n").encode("ascii")
            h.update(joined)
        return h.hexdigest()


# ---- what one gateway holds (docs/protocol.md, "holds") ----------------------------------------------------
FAMILY_OFF = "family_disabled"
INTERNAL = "internal"
REASONS = {FAMILY_OFF: "IPv%d is off on this gateway", INTERNAL: "inside this gateway's internal networks"}


def reason_text(reason, element=None):
    """The operator's words for a skip reason ('IPv6 is off on this gateway')."""
    version = 4 if element is not None and ":" not in str(element).split()[0] else 6
    return REASONS[reason] % version if reason == FAMILY_OFF else REASONS[reason]


def _span4(net):
    """(first, last) address of a canonical IPv4 network text, as integers (inet_pton: 10x ipaddress's speed)."""
    address, _slash, prefix = net.partition("/")
    first = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    return first, first | ((1 << (32 - int(prefix or 32))) - 1)


class Holding(object):
    """What a gateway is meant to hold of the published set: the elements of its address families that lie
    outside its own internal networks. The agent states it in its hello; the server filters with the same
    code, so both compute the same digest (Firewall.accept skips exactly what reason() names)."""

    __slots__ = ("families", "internal_networks", "key", "_policy", "_ranges", "_reasons")

    def __init__(self, families=(4,), internal_networks=DEFAULT_INTERNAL_NETWORKS):
        families = sorted(set(families))
        if not families or set(families) - {4, 6}:
            raise TargetError("holds families %r must be a non-empty list of 4 and/or 6" % (families,))
        nets = sorted(set(parse_networks(internal_networks)), key=lambda n: (n.version, n))
        self.families = tuple(families)
        self.internal_networks = tuple(str(n) for n in nets)
        self.key = hashlib.sha256(json.dumps(self.to_wire(), sort_keys=True).encode("ascii")).hexdigest()[:16]
        # The agent's firewall asks this policy (Firewall.accept); IPv4 takes the fast path below, which gives
        # the same answer (overlap with an IPv4 internal network), IPv6 (embedded IPv4 addresses) asks it.
        self._policy = AddressPolicy(self.internal_networks, min_prefix_v4=0, min_prefix_v6=0)
        self._ranges = [(int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == 4]
        self._reasons = {}

    def to_wire(self):
        return {"families": list(self.families), "internal_networks": list(self.internal_networks)}

    @classmethod
    def from_wire(cls, value):
        """Parse the hello's holds object; raise TargetError naming what is wrong."""
        if not isinstance(value, dict) or set(value) - {"families", "internal_networks"}:
            raise TargetError("holds must be an object with families and internal_networks")
        families, nets = value.get("families"), value.get("internal_networks")
        if not isinstance(families, list) or not all(isinstance(f, int) and not isinstance(f, bool)
                                                     for f in families):
            raise TargetError("holds families must be a list of 4 and/or 6, not %r" % (families,))
        if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets) or len(nets) > 4096:
            raise TargetError("holds internal_networks must be a list of at most 4096 CIDR strings")
        return cls(families, nets)

    def _internal(self, net):
        if ":" in net:
            return self._policy.is_internal(net)
        first, last = _span4(net)
        for low, high in self._ranges:
            if low <= last and first <= high:
                return True
        return False

    def reason(self, element):
        """None when the gateway holds this element (Element or canonical text), else FAMILY_OFF or INTERNAL."""
        net = element.net if isinstance(element, Element) else element.split(" ", 1)[0]
        try:
            return self._reasons[net]
        except KeyError:
            pass
        if self._internal(net):
            result = INTERNAL
        elif (6 if ":" in net else 4) not in self.families:
            result = FAMILY_OFF
        else:
            result = None
        if len(self._reasons) >= 1 << 18:    # bounded: the published set may churn through many addresses
            self._reasons.clear()
        self._reasons[net] = result
        return result

    def skipped(self, texts):
        """{element text: reason} of the canonical texts this gateway does not hold."""
        result = {}
        for text in texts:
            why = self.reason(text)
            if why is not None:
                result[text] = why
        return result

    def digest(self, texts, skipped=None):
        """The digest of what this gateway holds of the canonical texts (skipped: their skipped(), if known)."""
        skipped = self.skipped(texts) if skipped is None else skipped
        return digest_canonical(set(texts) - set(skipped) if skipped else texts)

    def __eq__(self, other):
        return isinstance(other, Holding) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return "Holding(%r, %d internal networks)" % (self.families, len(self.internal_networks))
