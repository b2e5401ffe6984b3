# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client routes: every public range towards the gateways, marked as ours with a protocol number.

Planning is pure (desired_routes, management_pins, plan); the kernel side is a thin pyroute2 (netlink) wrapper.
Only routes with ROUTE_PROTO in the main table are ever changed, so the default route and foreign routes are safe.
A route is identified by its key (prefix, metric) and carries a tuple of gateways (several: one ECMP route).
"""

from __future__ import annotations

import collections
import ipaddress
import socket

from .og_command import CommandError, refuse_root_netns
from .og_netpolicy import DEFAULT_INTERNAL_NETWORKS, parse_networks, public_networks

ROUTE_PROTO = 191   # "outputguard" in /etc/iproute2/rt_protos terms; kernel, boot and static are 2-4
MAIN_TABLE = 254
BASE_METRIC = 100   # failover: primary 100, first standby 101, ...; ECMP: one route with metric 100
MODES = ("failover", "ecmp")
RTM_F_FIB_MATCH = 0x2000   # `ip route get fibmatch`: answer with the route that matched, not a clone

# The route the kernel chose for an address: proto, prefix, metric, and next hops (empty for a link route).
Path = collections.namedtuple("Path", "proto prefix metric gateways")


class RouteError(CommandError):
    """The routes cannot be planned or applied; the message names the value and the fix."""


def check_gateway_list(gateways, mode="failover", ipv6=False):
    """Raise RouteError unless `gateways` are distinct IP addresses usable in `mode` (pure, no kernel)."""
    if mode not in MODES:
        raise RouteError("mode %r is not one of %s" % (mode, ", ".join(MODES)))
    if not gateways:
        raise RouteError("no gateway given; name at least one gateway address on this host's LAN")
    seen = set()
    for gw in gateways:
        try:
            address = ipaddress.ip_address(str(gw).strip())
        except ValueError:
            raise RouteError("gateway %r is not an IP address; give the gateway's address on this host's LAN, "
                             "e.g. 10.77.0.1" % (gw,))
        if address in seen:
            raise RouteError("gateway %s is listed twice; list each gateway once (the first is the primary)" % address)
        seen.add(address)
    if ipv6 and not any(a.version == 6 for a in seen):
        raise RouteError("ipv6 is requested but no gateway is an IPv6 address (gateways: %s); add the gateway's "
                         "IPv6 address or turn ipv6 off" % ", ".join(str(g) for g in gateways))
    if not any(a.version == 4 for a in seen):
        raise RouteError("no gateway is an IPv4 address (gateways: %s); the public IPv4 ranges need one"
                         % ", ".join(str(g) for g in gateways))


def host_prefix(address):
    """'203.0.113.5' -> '203.0.113.5/32' (an IPv4-mapped IPv6 address counts as its IPv4 address)."""
    addr = ipaddress.ip_address(str(address).split("%", maxsplit=1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(ipaddress.ip_network(addr))


def carve(networks, holes):
    """`networks` minus every network in `holes`, as minimal prefixes."""
    result = list(networks)
    for hole in holes:
        nxt = []
        for net in result:
            if net.version != hole.version or not net.overlaps(hole):
                nxt.append(net)
            elif hole.supernet_of(net):
                continue
            else:   # prefixes either nest or are disjoint: here the hole lies inside net
                nxt.extend(net.address_exclude(hole))
        result = nxt
    return sorted(ipaddress.collapse_addresses(result)) if result else []


def public_prefixes(internal_networks=DEFAULT_INTERNAL_NETWORKS, exclude=(), version=4):
    """The minimal prefixes that cover every address of `version` outside internal networks and `exclude`."""
    holes = [h for h in parse_networks(exclude, "exclude network") if h.version == version]
    return carve(public_networks(internal_networks, version), holes)


def desired_routes(gateways, mode="failover", internal_networks=DEFAULT_INTERNAL_NETWORKS, exclude=(), ipv6=False):
    """{(prefix, metric): (gateway, ...)} for the public ranges minus `exclude`.

    failover: one route per gateway and prefix, metrics rising in the order given (the first is used);
    ecmp: one multipath route per prefix across all gateways of the family.
    """
    if mode not in MODES:
        raise RouteError("mode %r is not one of %s" % (mode, ", ".join(MODES)))
    gws = [ipaddress.ip_address(str(g).strip()) for g in gateways]
    routes = {}
    for version in ((4, 6) if ipv6 else (4,)):
        fam_gws = [str(g) for g in gws if g.version == version]
        if not fam_gws:
            continue
        for prefix in public_prefixes(internal_networks, exclude, version):
            if mode == "ecmp":
                routes[(str(prefix), BASE_METRIC)] = tuple(sorted(fam_gws, key=ipaddress.ip_address))
            else:
                for i, gw in enumerate(fam_gws):
                    routes[(str(prefix), BASE_METRIC + i)] = (gw,)
    return routes


def management_pins(addresses, lookup):
    """Host routes that keep each management address on its current path when that path is one of ours.

    `lookup(address)` returns the Path the kernel uses now (or None). An address whose path is a foreign
    route (the default route, a static route) needs no pin: it is carved out of our prefixes instead.
    """
    pins = {}
    for address in addresses:
        path = lookup(address)
        if path is not None and path.proto == ROUTE_PROTO and path.gateways:
            pins[(host_prefix(address), BASE_METRIC)] = tuple(path.gateways)
    return pins


def route_line(key, gws):
    prefix, metric = key
    return "%s via %s metric %d" % (prefix, ",".join(gws), metric)


def _sort_key(key):
    net = ipaddress.ip_network(key[0])
    return (net.version, int(net.network_address), net.prefixlen, key[1])


def plan(current, desired):
    """(add, change, remove, diff): keys to add, keys whose gateways differ, keys to remove; diff as text."""
    add = sorted((k for k in desired if k not in current), key=_sort_key)
    change = sorted((k for k in desired if k in current and tuple(current[k]) != tuple(desired[k])), key=_sort_key)
    remove = sorted((k for k in current if k not in desired), key=_sort_key)
    diff = {
        "before": "".join(route_line(k, current[k]) + "\n" for k in sorted(current, key=_sort_key)),
        "after": "".join(route_line(k, desired[k]) + "\n" for k in sorted(desired, key=_sort_key)),
    }
    return add, change, remove, diff


class RouteTable(object):
    """Our routes in the kernel's main table, through one netlink socket."""

    def __init__(self, ipr=None):
        if ipr is None:
            try:
                from pyroute2 import IPRoute
            except ImportError:
                raise RouteError("pyroute2 is missing. Is the package python3-pyroute2 (or pyroute2 from PyPI) "
                                 "installed for the Python that runs this?")
            ipr = IPRoute()
        self.ipr = ipr

    def close(self):
        self.ipr.close()

    @staticmethod
    def _path(msg):
        family = msg["family"]
        dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
        prefix = str(ipaddress.ip_network("%s/%d" % (dst, msg["dst_len"])))
        multipath = msg.get_attr("RTA_MULTIPATH")
        if multipath:
            gws = tuple(sorted((str(n.get_attr("RTA_GATEWAY")) for n in multipath if n.get_attr("RTA_GATEWAY")),
                               key=ipaddress.ip_address))
        else:
            gw = msg.get_attr("RTA_GATEWAY")
            gws = (str(gw),) if gw else ()
        return Path(msg["proto"], prefix, msg.get_attr("RTA_PRIORITY") or 0, gws)

    def own_routes(self, ipv6=True):
        """{(prefix, metric): (gateway, ...)} of the routes marked with ROUTE_PROTO."""
        routes = {}
        for family in ((socket.AF_INET, socket.AF_INET6) if ipv6 else (socket.AF_INET,)):
            for msg in self.ipr.get_routes(family=family, table=MAIN_TABLE):
                if msg["proto"] != ROUTE_PROTO:
                    continue
                path = self._path(msg)
                routes[(path.prefix, path.metric)] = path.gateways
        return routes

    def lookup(self, address):
        """The Path the kernel uses for `address` now (`ip route get fibmatch`), or None when unroutable."""
        dst = host_prefix(address).split("/", maxsplit=1)[0]
        try:
            msgs = list(self.ipr.route("get", dst=dst, flags=RTM_F_FIB_MATCH))
        except Exception:   # NetlinkError: network unreachable
            return None
        return self._path(msgs[0]) if msgs else None

    def connected_networks(self):
        """[(network, own address)] of every address configured on this host."""
        nets = []
        for msg in self.ipr.get_addr():
            address = msg.get_attr("IFA_ADDRESS")
            if address:
                iface = ipaddress.ip_interface("%s/%d" % (address.split("%")[0], msg["prefixlen"]))
                nets.append((iface.network, iface.ip))
        return nets

    def check_gateways(self, gateways):
        """Raise RouteError unless every gateway is another host on a directly connected network."""
        nets = self.connected_networks()
        described = ", ".join(sorted(set(str(n) for n, dummy in nets if n.prefixlen < n.max_prefixlen))) or "none"
        for gw in gateways:
            address = ipaddress.ip_address(str(gw).strip())
            if any(address == own for dummy, own in nets):
                raise RouteError("gateway %s is an address of this host itself; give the address of the gateway "
                                 "host on the same LAN" % gw)
            if not any(address in net for net, dummy in nets
                       if net.version == address.version and net.prefixlen < net.max_prefixlen):
                raise RouteError(
                    "gateway %s is not on a directly connected network of this host (connected: %s); give the "
                    "address of a gateway on the same LAN" % (gw, described))

    def _route(self, verb, key, gws):
        prefix, metric = key
        kwargs = {"dst": prefix, "proto": ROUTE_PROTO, "priority": metric, "table": MAIN_TABLE}
        if verb != "del":
            if len(gws) > 1:
                kwargs["multipath"] = [{"gateway": g} for g in gws]
            else:
                kwargs["gateway"] = gws[0]
        try:
            self.ipr.route(verb, **kwargs)
        except Exception as exc:  # NetlinkError carries the errno text
            raise RouteError("could not %s the route %s: %s" % (
                {"add": "add", "replace": "change", "del": "remove"}[verb], route_line(key, gws), exc))

    def apply(self, add, change, remove, desired, current):
        """Add, then change, then remove (new paths exist before old ones go); undo all on the first error."""
        refuse_root_netns("routes")
        # Preferred routes first: in a failover switch, traffic has moved once the metric-100 routes have.
        add = sorted(add, key=lambda k: (k[1], _sort_key(k)))
        change = sorted(change, key=lambda k: (k[1], _sort_key(k)))
        done = []
        try:
            for key in add:
                self._route("add", key, desired[key])
                done.append(("del", key, desired[key]))
            for key in change:
                self._route("replace", key, desired[key])
                done.append(("replace", key, current[key]))
            for key in remove:
                self._route("del", key, current[key])
                done.append(("add", key, current[key]))
        except RouteError:
            for verb, key, gws in reversed(done):
                try:
                    self._route(verb, key, gws)
                except RouteError:
                    pass   # best effort: the original error is the one to report
            raise
