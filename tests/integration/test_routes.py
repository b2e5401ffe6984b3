"""The og_public_routes module for real: the `ansible` CLI runs it inside a client namespace.

The client (10.89.0.2 on a bridge) shares a LAN with two gateway namespaces (10.89.0.1 and 10.89.0.3); its
default route points at a router 10.89.0.254 and a foreign static route sends 198.51.100.0/24 to 10.89.0.253.
The collection is found through a temporary ANSIBLE_COLLECTIONS_PATH linking to this working tree.
"""

import ipaddress
import json
import os

import pytest

from og_kernel.og_routes import desired_routes
from tests.support.ansiblelib import Ansible
from tests.support.nslib import link

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

MODULE = "outputguard.egress.og_public_routes"
GW_A, GW_B, ROUTER, OTHER_HOP = "10.89.0.1", "10.89.0.3", "10.89.0.254", "10.89.0.253"
GW_A6, GW_B6 = "fd89::1", "fd89::3"
MANAGER = "203.0.113.50"
SSH = {"SSH_CONNECTION": "%s 51022 10.89.0.2 22" % MANAGER}


class Lan:
    """client -- br0 -- gateway A, gateway B; addresses only, no forwarding needed to test the routes."""

    def __init__(self, make, tag):
        self.client = make(tag + "c")
        self.gw = {GW_A: make(tag + "a"), GW_B: make(tag + "b")}
        self.client.ip("link", "add", "br0", "type", "bridge")
        self.client.ip("addr", "add", "10.89.0.2/24", "dev", "br0")
        self.client.ip("addr", "add", "fd89::2/64", "dev", "br0", "nodad")
        self.client.ip("link", "set", "br0", "up")
        for i, (address, six) in enumerate(((GW_A, GW_A6), (GW_B, GW_B6))):
            link(self.client, "port%d" % i, None, self.gw[address], "lan0", [address + "/24", six + "/64"])
            self.client.ip("link", "set", "port%d" % i, "master", "br0")
        self.client.ip("route", "add", "default", "via", ROUTER)
        self.client.ip("route", "add", "198.51.100.0/24", "via", OTHER_HOP, "proto", "static")

    def routes(self):
        """Every route of the client's main table (IPv4 and IPv6), as ip's JSON objects."""
        return [r for fam in ("-4", "-6") for r in json.loads(self.client.ip("-j", fam, "route", "show").stdout)]

    def ours(self):
        """{(prefix, metric): (gateway, ...)} of the routes with protocol 191."""
        found = {}
        for r in self.routes():
            if r.get("protocol") == "191":
                gws = tuple(sorted(h["gateway"] for h in r["nexthops"])) if "nexthops" in r else (r["gateway"],)
                found[(str(ipaddress.ip_network(r["dst"])), r["metric"])] = gws
        return found

    def foreign(self):
        return [r for r in self.routes() if r.get("protocol") != "191"]

    def path(self, address):
        """(matched prefix, protocol, next hop) of the route the kernel uses for address."""
        (r,) = json.loads(self.client.ip("-j", "route", "get", "fibmatch", address).stdout)
        return r["dst"], r.get("protocol", "boot"), r.get("gateway")


@pytest.fixture
def lan(netns_factory):
    return Lan(netns_factory, "rt")


@pytest.fixture
def ansible(lan, tmp_path):
    return Ansible(tmp_path, ns=lan.client, module=MODULE)


def lines(routes):
    return sorted("%s via %s metric %d" % (k[0], ",".join(v), k[1]) for k, v in routes.items())


def test_present_check_diff_idempotence_management_path_and_absent(lan, ansible):
    args = {"gateways": [GW_A, GW_B], "exclude": ["203.0.113.128/25"]}
    expected = desired_routes([GW_A, GW_B], exclude=["203.0.113.128/25", MANAGER + "/32"])
    assert len(expected) == 2 * 98
    pristine = lan.routes()
    foreign = lan.foreign()

    status, result, printed = ansible(args, "--check", "--diff", env=SSH)
    assert (status, result["changed"], result["routes"], result["removed"], result["management"]) == (
        "CHANGED", True, 196, [], [MANAGER + " carved"])
    assert sorted(result["added"]) == lines(expected)
    assert lan.routes() == pristine   # check mode changed nothing
    diff = printed.splitlines()
    for line in ("+1.0.0.0/8 via 10.89.0.1 metric 100", "+1.0.0.0/8 via 10.89.0.3 metric 101",
                 "+203.0.113.48/31 via 10.89.0.1 metric 100", "+203.0.113.51/32 via 10.89.0.1 metric 100"):
        assert line in diff
    assert not [line for line in diff if line.startswith("+203.0.113.50/") or line.startswith("+203.0.113.128/")]

    status, result, dummy = ansible(args, env=SSH)
    assert (status, result["changed"], len(result["added"])) == ("CHANGED", True, 196)
    assert lan.ours() == expected
    assert lan.foreign() == foreign   # the default route and the foreign static route are untouched
    assert lan.path("203.0.113.10") == ("203.0.113.0/27", "191", GW_A)
    assert lan.path("201.0.0.1") == ("200.0.0.0/7", "191", GW_A)
    assert lan.path("8.8.8.8") == ("8.0.0.0/7", "191", GW_A)
    assert lan.path("172.64.1.1") == ("172.64.0.0/10", "191", GW_A)
    assert lan.path(MANAGER) == ("default", "boot", ROUTER)         # the management path is as it was
    assert lan.path("203.0.113.200") == ("default", "boot", ROUTER)  # so is the excluded network
    assert lan.path("198.51.100.7") == ("198.51.100.0/24", "static", OTHER_HOP)
    assert lan.path("10.1.2.3") == ("default", "boot", ROUTER)       # internal: not ours to route

    installed = lan.routes()
    status, result, printed = ansible(args, "--diff", env=SSH)
    assert (status, result["changed"], result["added"], result["changed_routes"], result["removed"]) == (
        "SUCCESS", False, [], [], [])
    assert "--- before" not in printed
    assert lan.routes() == installed   # not re-added either

    # A foreign route added meanwhile with one of our prefixes but another metric stays too.
    lan.client.ip("route", "add", "1.0.0.0/8", "via", OTHER_HOP, "metric", "50", "proto", "static")
    foreign = lan.foreign()

    status, result, dummy = ansible({"state": "absent"}, "--check")
    assert (status, len(result["removed"]), result["routes"]) == ("CHANGED", 196, 0)
    assert lan.ours() != {}
    status, result, printed = ansible({"state": "absent"}, "--diff")
    assert (status, len(result["removed"])) == ("CHANGED", 196)
    assert "-1.0.0.0/8 via 10.89.0.3 metric 101" in printed.splitlines()
    assert lan.ours() == {}
    assert lan.foreign() == foreign
    assert ansible({"state": "absent"})[:2] == ("SUCCESS", {
        "changed": False, "added": [], "changed_routes": [], "removed": [], "management": [], "routes": 0})


def test_a_management_path_through_our_routes_is_pinned(lan, ansible):
    assert ansible({"gateways": [GW_A]})[0] == "CHANGED"
    assert lan.path(MANAGER) == ("200.0.0.0/5", "191", GW_A)

    # Ansible now connects from MANAGER through gateway A; moving the routes to B must not move that path.
    status, result, printed = ansible({"gateways": [GW_B]}, "--diff", env=SSH)
    assert (status, result["management"]) == ("CHANGED", [MANAGER + " pinned"])
    assert "+203.0.113.50/32 via 10.89.0.1 metric 100" in printed.splitlines()
    assert lan.path(MANAGER) == (MANAGER, "191", GW_A)
    assert lan.path("203.0.113.51") == ("203.0.113.51", "191", GW_B)
    assert lan.path("203.0.113.10") == ("203.0.113.0/27", "191", GW_B)
    assert ansible({"gateways": [GW_B]}, env=SSH)[:2] == ("SUCCESS", {
        "changed": False, "added": [], "changed_routes": [], "removed": [], "management": [MANAGER + " pinned"],
        "routes": 100})

    status, result, printed = ansible({"state": "absent"}, env=SSH)
    assert (status, result["routes"]) == ("CHANGED", 1)
    assert ("[WARNING]: kept the route 203.0.113.50/32 via 10.89.0.1 metric 100: it carries the connection "
            "Ansible uses (SSH_CONNECTION); run state=absent from another address to remove it") in printed
    assert lan.ours() == {(MANAGER + "/32", 100): (GW_A,)}
    status, result, dummy = ansible({"state": "absent"})
    assert (status, result["removed"], lan.ours()) == ("CHANGED", ["203.0.113.50/32 via 10.89.0.1 metric 100"], {})
    assert lan.path(MANAGER) == ("default", "boot", ROUTER)


def test_ecmp_and_ipv6_then_back_to_failover(lan, ansible):
    args = {"gateways": [GW_B, GW_A, GW_B6, GW_A6], "mode": "ecmp", "ipv6": True}
    status, result, dummy = ansible(args)
    assert (status, result["routes"]) == ("CHANGED", 73 + 239)
    ours = lan.ours()
    assert set(ours.values()) == {(GW_A, GW_B), (GW_A6, GW_B6)}
    assert ours[("2000::/3", 100)] == (GW_A6, GW_B6)
    assert len(ours) == 312
    assert ansible(args)[:2] == ("SUCCESS", {"changed": False, "added": [], "changed_routes": [], "removed": [],
                                             "management": [], "routes": 312})
    status, result, dummy = ansible(dict(args, mode="failover"))
    assert (status, len(result["added"]), len(result["changed_routes"]), result["removed"]) == (
        "CHANGED", 312, 312, [])
    assert lan.path("2001:db8::1") == ("2000::/3", "191", GW_B6)
    assert lan.path("8.8.8.8") == ("8.0.0.0/7", "191", GW_B)
    status, result, dummy = ansible({"gateways": [GW_A]})   # ipv6 off: our IPv6 routes go
    assert (status, len(result["removed"]), len(lan.ours())) == ("CHANGED", 2 * 312 - 73, 73)


def test_errors_name_the_problem_and_change_nothing(lan, ansible):
    assert ansible({"gateways": [GW_A]})[0] == "CHANGED"
    before = lan.routes()
    cases = [
        ({"gateways": [GW_A, "10.77.0.1"]},
         "gateway 10.77.0.1 is not on a directly connected network of this host (connected: 10.89.0.0/24, "
         "127.0.0.0/8, fd89::/64, fe80::/64); give the address of a gateway on the same LAN"),
        ({"gateways": ["10.89.0.2"]}, "gateway 10.89.0.2 is an address of this host itself; give the address of "
                                      "the gateway host on the same LAN"),
        ({"gateways": ["gw-a.example"]}, "gateway 'gw-a.example' is not an IP address; give the gateway's address "
                                         "on this host's LAN, e.g. 10.77.0.1"),
        ({"gateways": [GW_B], "ipv6": True}, "ipv6 is requested but no gateway is an IPv6 address (gateways: "
                                             "10.89.0.3); add the gateway's IPv6 address or turn ipv6 off"),
        ({"gateways": [GW_B], "exclude": ["203.0.113.0/33"]},
         "exclude network '203.0.113.0/33' is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)"),
        ({"gateways": [GW_B], "internal_networks": ["10.0.0.0/8", "intranet"]},
         "internal network 'intranet' is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)"),
    ]
    for args, message in cases:
        status, result, dummy = ansible(args)
        assert (status, result["msg"], result["changed"]) == ("FAILED!", message, False)
        assert lan.routes() == before
