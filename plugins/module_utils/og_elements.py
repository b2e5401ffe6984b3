# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Elements: what a gateway puts in its sets ('198.51.100.10/32' or '198.51.100.10/32 443/tcp')."""

from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
import socket

from .og_netpolicy import TargetError, format_port_spec, parse_port_spec


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
            for text in block:
                yield text

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
