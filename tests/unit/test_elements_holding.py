# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Holding (docs/protocol.md, "holds"): the one filter by which server and agent agree on a gateway's digest."""

from __future__ import absolute_import, division, print_function

import pytest

from og_kernel.og_elements import FAMILY_OFF, INTERNAL, Element, Holding, digest_canonical, reason_text
from og_kernel.og_firewall import EgressPolicy, Firewall
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, TargetError

__metaclass__ = type

SAMPLE = ["198.51.100.10/32", "198.51.100.0/24 443/tcp", "203.0.113.0/24 8000-8100/tcp", "2001:db8::1/128",
          "2001:db8::/64 53/udp", "10.1.2.3/32", "10.0.0.0/7", "192.0.2.0/24", "fd00::1/128", "::ffff:10.0.0.1/128",
          "::ffff:198.51.100.1/128", "::ffff:0.0.0.0/95", "0.0.0.0/0", "11.0.0.0/8", "172.15.255.255/32",
          "172.16.0.0/32 22/tcp", "100.63.255.255/32", "100.64.0.0/32", "2001:db8:ffff::/48",
          # IPv6 that embeds an IPv4 address: NAT64, 6to4, Teredo, IPv4-compatible
          "64:ff9b::a00:1/128", "64:ff9b::c633:640a/128", "2002:a00:1::/48", "2002:c633:640a::/48",
          "2001:0:4136:e378:8000:63bf:f5ff:fffe/128", "::a00:1/128", "2001::/32"]


def test_an_ipv4_only_gateway_skips_ipv6_and_its_internal_networks_with_the_reason():
    holding = Holding([4], ["10.0.0.0/8", "192.0.2.0/24"])
    assert holding.skipped(["198.51.100.10/32", "2001:db8::1/128", "10.1.2.3/32", "192.0.2.7/32 443/tcp",
                            "2001:db8::/64 53/udp"]) == {
        "2001:db8::1/128": FAMILY_OFF, "2001:db8::/64 53/udp": FAMILY_OFF, "10.1.2.3/32": INTERNAL,
        "192.0.2.7/32 443/tcp": INTERNAL}
    kept = ["198.51.100.10/32"]
    assert holding.digest(kept + ["2001:db8::1/128", "10.1.2.3/32"]) == digest_canonical(kept)
    assert reason_text(FAMILY_OFF, "2001:db8::1/128") == "IPv6 is off on this gateway"
    assert reason_text(INTERNAL, "10.1.2.3/32") == "inside this gateway's internal networks"


def test_a_holding_that_skips_nothing_gives_the_plain_digest():
    holding = Holding([4, 6], [])
    texts = ["198.51.100.10/32", "2001:db8::1/128", "10.1.2.3/32"]
    assert holding.skipped(texts) == {}
    assert holding.digest(texts) == digest_canonical(texts)


@pytest.mark.parametrize("families", [(4,), (4, 6)])
@pytest.mark.parametrize("internal", [DEFAULT_INTERNAL_NETWORKS, ("10.0.0.0/8", "fd00::/8"), ()])
def test_it_skips_exactly_what_the_gateways_firewall_skips(families, internal):
    """Firewall.accept (what the kernel gets) and Holding (what the server expects) must never disagree."""
    fw = Firewall(EgressPolicy(["10.88.0.0/24"], "out0", ipv6=6 in families, internal_networks=internal))
    elements = [Element.parse(t) for t in SAMPLE]
    _kept, skipped = fw.accept(elements)
    holding = Holding(fw.policy.versions, [str(n) for n in fw.policy.address_policy.internal])
    assert sorted(holding.skipped(e.text for e in elements)) == sorted(e.text for e in skipped)


def test_the_key_and_the_wire_form_do_not_depend_on_order_or_spelling():
    a = Holding([4], ["192.168.0.0/16", "10.0.0.1/8"])
    b = Holding.from_wire({"families": [4, 4], "internal_networks": ["10.0.0.0/8", "192.168.0.0/16"]})
    assert a == b and a.key == b.key and len(a.key) == 16
    assert a.to_wire() == {"families": [4], "internal_networks": ["10.0.0.0/8", "192.168.0.0/16"]}
    assert Holding([4, 6], []).key != Holding([4], []).key


@pytest.mark.parametrize("wire, message", [
    ([4], "holds must be an object with families and internal_networks"),
    ({"families": [4], "internal_networks": [], "x": 1}, "holds must be an object with families and internal"),
    ({"families": [5], "internal_networks": []}, "holds families [5] must be a non-empty list of 4 and/or 6"),
    ({"families": [], "internal_networks": []}, "holds families [] must be a non-empty list of 4 and/or 6"),
    ({"families": ["4"], "internal_networks": []}, "holds families must be a list of 4 and/or 6, not ['4']"),
    ({"families": [4], "internal_networks": "10.0.0.0/8"}, "holds internal_networks must be a list of at most"),
    ({"families": [4], "internal_networks": ["10.0.0.0/33"]}, "internal network '10.0.0.0/33' is not an IPv4/IPv6"),
])
def test_a_bad_holds_object_is_refused_naming_the_problem(wire, message):
    with pytest.raises(TargetError) as caught:
        Holding.from_wire(wire)
    assert str(caught.value).startswith(message)
