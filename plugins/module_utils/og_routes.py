# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client routes: every public range towards the gateways, marked as ours with a protocol number.

Planning is pure (desired_routes, plan); the kernel side is a thin pyroute2 (netlink) wrapper. Only routes
with ROUTE_PROTO in the main table are ever changed, so the default route and foreign routes are safe.
"""

from __future__ import annotations

import ipaddress
import socket

from .og_command import CommandError, refuse_root_netns
from .og_netpolicy import DEFAULT_INTERNAL_NETWORKS, parse_networks, public_networks

ROUTE_PROTO = 191   # "outputguard" in /etc/iproute2/rt_protos terms; kernel, boot and static are 2-4
MAIN_TABLE = 254
BASE_METRIC = 100


class RouteError(CommandError):
    """The routes cannot be planned or applied; the message names the value and the fix."""


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
            else:
                nxt.extend(net.address_exclude(hole))
        result = nxt
    return sorted(ipaddress.collapse_addresses(result)) if result else []


def desired_routes(gateways, mode="failover", internal_networks=DEFAULT_INTERNAL_NETWORKS, exclude=(), ipv6=False):
    """{(prefix, metric): (gateway, ...)} for the public ranges minus `exclude`."""
    gws = [ipaddress.ip_address(g) for g in gateways]
    holes = parse_networks(exclude, "exclude network")
    routes = {}
    for version in ((4, 6) if ipv6 else (4,)):
        fam_gws = [str(g) for g in gws if g.version == version]
        if not fam_gws:
            continue
        prefixes = carve(public_networks(internal_networks, version), [h for h in holes if h.version == version])
        for prefix in prefixes:
            if mode == "ecmp":
                routes[(str(prefix), BASE_METRIC)] = tuple(sorted(fam_gws))
            else:
                for i, gw in enumerate(fam_gws):
                    routes[(str(prefix), BASE_METRIC + i)] = (gw,)
    return routes


def route_line(key, gws):
    prefix, metric = key
    return "%s via %s metric %d" % (prefix, ",".join(gws), metric)


def _sort_key(key):
    net = ipaddress.ip_network(key[0])
    return (net.version, int(net.network_address), net.prefixlen, key[1])


def plan(current, desired):
    """(add, change, remove, diff): keys to add, keys whose gateways differ, keys to remove."""
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

    def own_routes(self, ipv6=True):
        """{(prefix, metric): (gateway, ...)} of the routes marked with ROUTE_PROTO."""
        routes = {}
        for family in ((socket.AF_INET, socket.AF_INET6) if ipv6 else (socket.AF_INET,)):
            for msg in self.ipr.get_routes(family=family, table=MAIN_TABLE):
                if msg["proto"] != ROUTE_PROTO:
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                prefix = str(ipaddress.ip_network("%s/%d" % (dst, msg["dst_len"])))
                metric = msg.get_attr("RTA_PRIORITY") or 0
                multipath = msg.get_attr("RTA_MULTIPATH")
                if multipath:
                    gws = tuple(sorted(str(n.get_attr("RTA_GATEWAY")) for n in multipath))
                else:
                    gws = (str(msg.get_attr("RTA_GATEWAY")),)
                routes[(prefix, metric)] = gws
        return routes

    def connected_networks(self):
        nets = []
        for msg in self.ipr.get_addr():
            address = msg.get_attr("IFA_ADDRESS")
            if address:
                nets.append(ipaddress.ip_interface("%s/%d" % (address, msg["prefixlen"])).network)
        return nets

    def check_gateways(self, gateways):
        """Raise RouteError unless every gateway is on a directly connected network."""
        nets = self.connected_networks()
        for gw in gateways:
            address = ipaddress.ip_address(gw)
            if not any(address in net for net in nets if net.version == address.version and net.prefixlen < net.max_prefixlen):
                raise RouteError(
                    "gateway %s is not on a directly connected network of this host (connected: %s); give the "
                    "address of a gateway on the same LAN" % (gw, ", ".join(sorted(str(n) for n in nets)) or "none"))

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
        refuse_root_netns("routes")
        for key in remove:
            self._route("del", key, current[key])
        for key in change:
            self._route("replace", key, desired[key])
        for key in add:
            self._route("add", key, desired[key])
