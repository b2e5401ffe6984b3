"""The address policy shared by server, agent and routes: exact answers for each kind of target."""

import ipaddress

import pytest

from og_kernel.og_elements import Element, digest
from og_kernel.og_netpolicy import (
    DEFAULT_INTERNAL_NETWORKS, AddressPolicy, Target, TargetError, matches, parse_port_spec, public_networks)


@pytest.fixture
def policy():
    return AddressPolicy()


@pytest.mark.parametrize("text, kind, value", [
    ("198.51.100.10", "ip", "198.51.100.10"),
    ("198.51.100.10/32", "ip", "198.51.100.10"),
    (" 198.51.100.0/24 ", "cidr", "198.51.100.0/24"),
    ("2001:db8::1", "ip", "2001:db8::1"),
    ("2001:DB8::/32", "cidr", "2001:db8::/32"),
    ("Api.Example.COM.", "domain", "api.example.com"),
    ("bücher.example", "domain", "xn--bcher-kva.example"),
    ("192.0.2.1", "ip", "192.0.2.1"),  # documentation ranges are "public" here, unlike is_private
])
def test_targets_are_normalised(policy, text, kind, value):
    assert policy.parse_target(text) == Target(kind, value)


@pytest.mark.parametrize("text, words", [
    ("10.0.0.0/8", "internal network 10.0.0.0/8"),
    ("10.1.2.3", "internal network 10.0.0.0/8"),
    ("8.0.0.0/6", "too broad"),  # overlaps 10/8 but is first refused as broader than /8
    ("0.0.0.0/0", "too broad"),
    ("::/0", "too broad"),
    ("127.0.0.1", "internal network 127.0.0.0/8"),
    ("100.64.0.1", "internal network 100.64.0.0/10"),
    ("172.20.0.0/16", "internal network 172.16.0.0/12"),
    ("169.254.169.254", "internal network 169.254.0.0/16"),
    ("fd00::1", "internal network fc00::/7"),
    ("::ffff:10.0.0.1", "internal network ::ffff:0:0/96"),
    ("224.0.0.1", "internal network 224.0.0.0/4"),
    ("255.255.255.255", "internal network 240.0.0.0/4"),
    ("not an address", "'not an address' is neither"),
    ("localhost", "'localhost' is neither"),
    ("1.2.3.4/24", "host bits set; did you mean 1.2.3.0/24"),
    ("300.1.1.1", "'300.1.1.1' is not a valid IP address"),
    ("", "non-empty string"),
    ("a" * 300, "longer than 253"),
])
def test_bad_targets_name_the_problem(policy, text, words):
    with pytest.raises(TargetError) as err:
        policy.parse_target(text)
    assert words in str(err.value)


@pytest.mark.parametrize("text, value", [
    ("*.example.com", "*.example.com"),
    ("*.API.Example.COM.", "*.api.example.com"),
    (" *.bücher.example ", "*.xn--bcher-kva.example"),
])
def test_wildcard_targets_are_domains_marked_wildcard(policy, text, value):
    target = policy.parse_target(text)
    assert (target.kind, target.value, target.wildcard) == ("domain", value, True)


def test_exact_names_are_not_wildcards_and_differ_from_the_wildcard_of_the_same_zone(policy):
    exact = policy.parse_target("example.com")
    assert exact.wildcard is False
    assert exact != policy.parse_target("*.example.com")


@pytest.mark.parametrize("text, words", [
    ("*", "'*' would allow every name"),
    ("*.", "'*.' would allow every name"),
    ("*.com", "'*.com' would allow a whole top-level domain"),
    ("*.com.", "'*.com.' would allow a whole top-level domain"),
    ("a.*.example.com", "'a.*.example.com': the star is not the first label"),
    ("*.*.example.com", "'*.*.example.com': the star is not the first label, or appears more than once"),
    ("*x.example.com", "'*x.example.com': the star shares a label with other characters"),
    ("**.example.com", "'**.example.com': the star shares a label"),
    ("*.exa mple.com", "'exa mple.com' after the star is not a valid domain name"),
    ("*.192.0.2.1", "after the star is not a valid domain name"),
])
def test_bad_wildcards_name_the_value_and_the_fix(policy, text, words):
    with pytest.raises(TargetError) as err:
        policy.parse_target(text)
    assert words in str(err.value)
    assert "e.g. *.example.com" in str(err.value)


# The matching rule of exact and wildcard names; og-dns's indexed Matcher is held to the same table
# (tests/dns/test_dns_units.py).
MATCH_CASES = [
    ("example.com", "example.com", True),
    ("example.com", "EXAMPLE.com.", True),
    ("example.com", "www.example.com", False),
    ("example.com", "example.org", False),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.Example.COM.", "API.example.com.", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    ("*.example.com", ".example.com", False),
    ("*.example.com", "example.com.evil.org", False),
    ("*.example.com", "com", False),
    ("*.example.com", "a..example.com", False),
    ("*.example.com", ".a.example.com", True),
]


@pytest.mark.parametrize("pattern, name, expected", MATCH_CASES)
def test_matches_exact_and_wildcard_names(pattern, name, expected):
    assert matches(pattern, name) is expected


def test_cidr_overlapping_an_internal_network_is_refused():
    policy = AddressPolicy(min_prefix_v4=4)
    with pytest.raises(TargetError, match="overlaps the internal network 10.0.0.0/8"):
        policy.parse_target("8.0.0.0/6")
    assert policy.parse_target("12.0.0.0/6") == Target("cidr", "12.0.0.0/6")


def test_configured_internal_networks_replace_the_defaults():
    policy = AddressPolicy(["198.51.100.0/24"])
    assert policy.parse_target("10.0.0.1") == Target("ip", "10.0.0.1")
    with pytest.raises(TargetError, match="198.51.100.0/24"):
        policy.parse_target("198.51.100.7")


_NEVER = "; internal addresses are never allowed through the gateway"


@pytest.mark.parametrize("text, message", [
    # NAT64 well-known prefix (RFC 6052): the last 32 bits
    ("64:ff9b::a00:1", "64:ff9b::a00:1 embeds the IPv4 address 10.0.0.1 (NAT64 well-known prefix, 64:ff9b::/96), "
                       "which is inside or overlaps the internal network 10.0.0.0/8" + _NEVER),
    # NAT64 local-use prefix (RFC 8215): where the IPv4 address sits is the translator's choice
    ("64:ff9b:1:2::c633:640a", "64:ff9b:1:2::c633:640a is inside or overlaps the internal network 64:ff9b:1::/48"
                               + _NEVER),
    # 6to4 (RFC 3056): bits 16-47
    ("2002:a00:1::", "2002:a00:1:: embeds the IPv4 address 10.0.0.1 (6to4 prefix, 2002::/16), "
                     "which is inside or overlaps the internal network 10.0.0.0/8" + _NEVER),
    ("2002:c0a8::/32", "2002:c0a8::/32 embeds the IPv4 network 192.168.0.0/16 (6to4 prefix, 2002::/16), "
                       "which is inside or overlaps the internal network 192.168.0.0/16" + _NEVER),
    # Teredo (RFC 4380): the server in bits 32-63, the client bit-inverted in bits 96-127
    ("2001:0:a00:1::1", "2001:0:a00:1::1 embeds the IPv4 address 10.0.0.1 (Teredo prefix, 2001::/32), "
                        "which is inside or overlaps the internal network 10.0.0.0/8" + _NEVER),
    ("2001:0:c633:640a::f5ff:fffe", "2001:0:c633:640a::f5ff:fffe embeds the IPv4 address 10.0.0.1 (Teredo prefix, "
                                    "2001::/32), which is inside or overlaps the internal network 10.0.0.0/8" + _NEVER),
    # IPv4-compatible (RFC 4291, deprecated) and IPv4-translated (RFC 2765)
    ("::a9fe:a9fe", "::a9fe:a9fe embeds the IPv4 address 169.254.169.254 (IPv4-compatible prefix, ::/96), "
                    "which is inside or overlaps the internal network 169.254.0.0/16" + _NEVER),
    ("::ffff:0:a00:1", "::ffff:0:a00:1 embeds the IPv4 address 10.0.0.1 (IPv4-translated prefix, ::ffff:0:0:0/96), "
                       "which is inside or overlaps the internal network 10.0.0.0/8" + _NEVER),
    # IPv4-mapped: the whole prefix is internal by default
    ("::ffff:198.51.100.1", "::ffff:198.51.100.1 is inside or overlaps the internal network ::ffff:0:0/96" + _NEVER),
    # A prefix that leaves the embedded address open covers internal ones too
    ("2002::/16", "2002::/16 embeds the IPv4 network 0.0.0.0/0 (6to4 prefix, 2002::/16), "
                  "which is inside or overlaps the internal network 0.0.0.0/8" + _NEVER),
])
def test_ipv6_addresses_that_embed_an_internal_ipv4_address_are_refused(policy, text, message):
    with pytest.raises(TargetError) as err:
        policy.parse_target(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text", [
    "64:ff9b::c633:640a",            # NAT64 of 198.51.100.10
    "2002:c633:640a::1",             # 6to4 of 198.51.100.10
    "2001:0:c633:640a::3ccd:fffe",   # Teredo: server 198.51.100.10, client 195.50.0.1
    "::c633:640a",                   # IPv4-compatible 198.51.100.10
    "2001:db8::1",                   # not an embedding prefix at all (2001:db8:: is not Teredo's 2001:0::)
])
def test_ipv6_addresses_that_embed_a_public_ipv4_address_are_accepted(policy, text):
    assert policy.parse_target(text) == Target("ip", text)


def test_mapped_addresses_are_judged_by_their_ipv4_address_when_the_prefix_is_not_listed():
    policy = AddressPolicy(["10.0.0.0/8"])
    assert policy.refusal("::ffff:10.1.2.3") == ("embeds the IPv4 address 10.1.2.3 (IPv4-mapped prefix, "
                                                 "::ffff:0:0/96), which is inside or overlaps the internal "
                                                 "network 10.0.0.0/8")
    assert policy.refusal("::ffff:198.51.100.1") is None
    assert policy.is_internal("2002:a01::/32") is True and policy.is_internal("2002:c633::/32") is False


@pytest.mark.parametrize("text, parsed", [
    ("443/tcp", ("tcp", 443, 443)), ("53/UDP", ("udp", 53, 53)), ("8000-8100/tcp", ("tcp", 8000, 8100))])
def test_port_specs(text, parsed):
    assert parse_port_spec(text) == parsed


@pytest.mark.parametrize("text", ["443", "0/tcp", "70000/tcp", "90-80/tcp", "443/icmp", "a/tcp"])
def test_bad_port_specs(text):
    with pytest.raises(TargetError, match="port"):
        parse_port_spec(text)


def test_elements_have_one_canonical_text():
    assert Element.parse("198.51.100.10/32 443/TCP").text == "198.51.100.10/32 443/tcp"
    assert Element("198.51.100.10").text == "198.51.100.10/32"
    assert Element("2001:db8::1").text == "2001:db8::1/128"
    assert Element.parse("198.51.100.10/32") == Element("198.51.100.10", None)
    with pytest.raises(TargetError):
        Element.parse("198.51.100.10/32 443/tcp extra")


def test_digest_is_order_independent_and_matches_the_protocol_definition():
    import hashlib
    texts = ["203.0.113.0/24 443/tcp", "198.51.100.10/32"]
    expected = hashlib.sha256(b"198.51.100.10/32\n203.0.113.0/24 443/tcp\n").hexdigest()
    assert digest(texts) == expected
    assert digest(reversed(texts)) == expected
    assert digest([Element.parse(t) for t in texts]) == expected
    assert digest([]) == hashlib.sha256(b"").hexdigest()


def test_public_networks_tile_the_ipv4_space_with_the_internal_ones():
    internal = [n for n in map(ipaddress.ip_network, DEFAULT_INTERNAL_NETWORKS) if n.version == 4]
    public = public_networks(DEFAULT_INTERNAL_NETWORKS, 4)
    ranges = sorted((int(n.network_address), int(n.broadcast_address)) for n in internal + public)
    cursor = 0
    for first, last in ranges:
        assert first == cursor  # no gap and no overlap
        cursor = last + 1
    assert cursor == 2 ** 32
    assert list(ipaddress.collapse_addresses(public)) == public  # already minimal
    assert ipaddress.ip_network("172.64.0.0/10") in public  # outputGuard's hand-written list missed it
