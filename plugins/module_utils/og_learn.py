# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The learn sets og-dns fills: addresses from DNS answers for allowed names, each for its own timeout.

The sets (og-learn{v} hash:ip, og-learnp{v} hash:ip,port) are created by the firewall policy (og_firewall
Family.learn_sets) and referenced by two ACCEPT rules in OG-FORWARD; here they are only filled, through one
netlink socket (pyroute2), without a process per add: one DNS answer is one add() call. The kernel forgets a
member when its timeout runs out. Works inside a network namespace: the socket belongs to the namespace the
process is in when LearnSets() is made (docs/kernel-interface.md).
"""

from __future__ import annotations

import errno
import functools
import socket

from .og_netpolicy import TargetError, parse_port_spec

try:
    from pyroute2.ipset import IPSet, PortEntry, PortRange
    from pyroute2.netlink.exceptions import NetlinkError
except ImportError:  # LearnSets() names the package to install
    IPSet = PortEntry = PortRange = None

    class NetlinkError(Exception):
        """Stands in for pyroute2's when it is missing (never raised)."""

        code = 0


LEARN = "og-learn%d"
LEARN_PORTS = "og-learnp%d"
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}  # what parse_port_spec accepts
_PROTOCOL_NAMES = {number: name for name, number in _PROTOCOLS.items()}
_IPSET_ERR_EXIST = 4103      # IPSET_ERR_EXIST: deleting a member that is not there (without -exist)
_IPSET_ERR_HASH_FULL = 4352  # IPSET_ERR_TYPE_SPECIFIC: for hash types, the set is full (maxelem)


class LearnError(Exception):
    """A learn set cannot be filled; the message names the set or value and the fix."""

    def __init__(self, msg):
        super(LearnError, self).__init__(msg)
        self.msg = msg


@functools.lru_cache(maxsize=4096)
def _port(spec):
    """'443/tcp' or '8000-8010/tcp' -> (protocol number, first, last); LearnError naming a bad one."""
    try:
        proto, first, last = parse_port_spec(spec)
    except (TargetError, ValueError, TypeError) as exc:
        raise LearnError("learned port %r is not of the form '443/tcp' or '8000-8010/tcp': %s" % (spec, exc))
    return _PROTOCOLS[proto], first, last


def _version(address):
    """4 or 6 for an address text (no network, no prefix); LearnError naming a bad one."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.inet_pton(family, address)
    except (OSError, ValueError, TypeError):
        raise LearnError("address %r is not an IPv4 or IPv6 address; a learn set holds single addresses" % (address,))
    return 6 if family == socket.AF_INET6 else 4


class LearnSets(object):
    """og-learn{v} and og-learnp{v} of the current network namespace, through one netlink socket."""

    def __init__(self, ipv6=False, ipset=None):
        if ipset is None:
            if IPSet is None:
                raise LearnError("pyroute2 is missing. Is the package python3-pyroute2 (or pyroute2 from PyPI) "
                                 "installed for the Python that runs og-dns?")
            ipset = IPSet()
        self.ipset = ipset
        self.versions = (4, 6) if ipv6 else (4,)
        self.names = [name % v for v in self.versions for name in (LEARN, LEARN_PORTS)]
        try:
            self.check()
        except LearnError:
            self.close()
            raise

    def check(self):
        """Raise LearnError naming the first learn set that is missing or cannot be read (og-dns's /healthz)."""
        for name in self.names:
            try:
                self.ipset.get_set_byname(name)
            except NetlinkError as exc:
                if exc.code == errno.ENOENT:
                    raise LearnError("ipset %s does not exist in this network namespace: apply the gateway "
                                     "policy first (og_iptables_allow or the gateway agent create it)" % name)
                raise LearnError("ipset %s cannot be read: %s" % (name, exc))

    def add(self, items):
        """Add or refresh members; items: (address, port or None, timeout). Returns how many were added.

        A port is '443/tcp' or '8000-8010/tcp' (one member per port of the range). An existing member gets the
        new timeout and keeps its counters. Addresses of a family that is off are skipped (not counted).
        """
        added = 0
        for address, port, timeout in items:
            member = self._member(address, port)
            if member is None:
                continue
            name, entry, family, etype = member
            try:
                self.ipset.add(name, entry, family=family, exclusive=False, timeout=int(timeout), etype=etype)
            except NetlinkError as exc:
                raise LearnError(self._add_failed(name, address, port, exc))
            added += 1
        return added

    def _member(self, address, port):
        """(set name, pyroute2 entry, family, etype) of one member; None for a family that is off."""
        version = _version(address)
        if version not in self.versions:
            return None
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        if port is None:
            return LEARN % version, address, family, "ip"
        proto, first, last = _port(port)
        entry = (address, PortEntry(first, protocol=proto) if first == last else PortRange(first, last, protocol=proto))
        return LEARN_PORTS % version, entry, family, "ip,port"

    def delete(self, items):
        """Remove members at once; items: (address, port or None). A member that is not there (timed out
        already) is no error. Returns how many were asked for (families that are off skipped)."""
        asked = 0
        for address, port in items:
            member = self._member(address, port)
            if member is None:
                continue
            name, entry, family, etype = member
            try:
                self.ipset.delete(name, entry, family=family, exclusive=False, etype=etype)
            except NetlinkError as exc:
                if exc.code != _IPSET_ERR_EXIST:
                    raise LearnError("removing %s from ipset %s failed: %s" % (address, name, exc))
            asked += 1
        return asked

    @staticmethod
    def _add_failed(name, address, port, exc):
        member = address if port is None else "%s %s" % (address, port)
        if exc.code == errno.ENOENT:
            return ("ipset %s is gone (adding %s): re-apply the gateway policy, which creates it" % (name, member))
        if exc.code == _IPSET_ERR_HASH_FULL:
            return ("ipset %s is full (adding %s): its maxelem is the gateway cap; lower the names' TTLs or "
                    "raise the cap" % (name, member))
        return "adding %s to ipset %s failed: %s" % (member, name, exc)

    def members(self):
        """{set name: {member text as `ipset save` prints it: seconds left}} of the learn sets."""
        result = {}
        for name in self.names:
            found = result[name] = {}
            try:
                replies = self.ipset.list(name)
            except NetlinkError as exc:
                raise LearnError("ipset %s cannot be listed: %s" % (name, exc))
            for reply in replies:
                adt = reply.get_attr("IPSET_ATTR_ADT")
                if adt is None:
                    continue
                for data in adt.get_attrs("IPSET_ATTR_DATA"):
                    found[_member_text(data)] = data.get_attr("IPSET_ATTR_TIMEOUT")
        return result

    def close(self):
        if self.ipset is not None:
            self.ipset.close()
            self.ipset = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _member_text(data):
    """'198.51.100.10' or '198.51.100.10,tcp:443' from one IPSET_ATTR_DATA of a list reply."""
    ip = data.get_attr("IPSET_ATTR_IP_FROM")
    address = ip.get_attr("IPSET_ATTR_IPADDR_IPV4") or ip.get_attr("IPSET_ATTR_IPADDR_IPV6")
    port = data.get_attr("IPSET_ATTR_PORT_FROM")
    if port is None:
        return address
    proto = data.get_attr("IPSET_ATTR_PROTO")
    return "%s,%s:%d" % (address, _PROTOCOL_NAMES.get(proto, str(proto)), port)


__all__ = ["LearnError", "LearnSets"]
