# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""og_iptables_allow's argument handling: every bad argument fails with a message naming it, before any command."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError
from ansible_collections.outputguard.egress.plugins.modules import og_iptables_allow


class NoCommands(object):
    """A CommandRunner stand-in: every binary is installed, and running any command fails the test."""

    def __init__(self):
        self.calls = []

    def which(self, name):
        return "/usr/sbin/%s" % name

    def __call__(self, argv, stdin=None, check=True):
        self.calls.append(list(argv))
        raise AssertionError("the module ran %s while checking its arguments" % (argv,))


@pytest.fixture
def run_module(monkeypatch, capsys, tmp_path):
    """Run the module with these arguments; return (exit code, result dict, commands run)."""
    runner = NoCommands()
    monkeypatch.setattr(og_iptables_allow, "CommandRunner", lambda: runner)
    for name in ("lo", "eth0"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(og_iptables_allow.Firewall, "sys_class_net", str(tmp_path))

    def run(args):
        with patch_module_args(args):
            with pytest.raises(SystemExit) as exc:
                og_iptables_allow.main()
        return exc.value.code, json.loads(capsys.readouterr().out), runner.calls
    return run


def test_present_needs_client_networks_and_outside_interface(run_module):
    rc, res, calls = run_module({})
    assert (rc, res["failed"], calls) == (1, True, [])
    assert res["msg"] == "state is present but all of the following are missing: client_networks, outside_interface"


def test_present_names_the_missing_outside_interface(run_module):
    rc, res, calls = run_module({"client_networks": ["10.88.0.0/24"]})
    assert (rc, calls) == (1, [])
    assert res["msg"] == "state is present but all of the following are missing: outside_interface"


@pytest.mark.parametrize("args, message", [
    ({"state": "gone"}, "value of state must be one of: present, absent, got: gone"),
    ({"client_networks": ["10.88.0.0/24"], "outside_interface": "eth0", "allowlist": ["198.51.100.10"]},
     "Unsupported parameters for (basic.py) module: allowlist. Supported parameters include: "
     "allow_dns_over_tls, allowed, client_networks, exclusive, ipv6, mode, outside_interface, state."),
])
def test_ansible_rejects_bad_types_choices_and_names(run_module, args, message):
    rc, res, calls = run_module(args)
    assert (rc, res["msg"], calls) == (1, message, [])


def test_a_non_boolean_ipv6_is_refused(run_module):
    rc, res, calls = run_module({"ipv6": "maybe", "client_networks": ["10.88.0.0/24"], "outside_interface": "eth0"})
    assert (rc, calls) == (1, [])
    # Ansible lists the valid booleans from a set, in no fixed order.
    assert res["msg"].startswith("argument 'ipv6' is of type str and we were unable to convert to bool: The value "
                                 "'maybe' is not a valid boolean.")


@pytest.mark.parametrize("networks, ipv6, message", [
    (["10.88.0.1/24"], False, "client network '10.88.0.1/24' has host bits set; did you mean 10.88.0.0/24?"),
    (["10.88.0.0/33"], False, "client network '10.88.0.0/33' is not an IPv4/IPv6 network in CIDR notation; "
                              "write it like 10.88.0.0/24"),
    (["fd00:88::/64"], False, "client network fd00:88::/64 is IPv6 but ipv6 is off: enable ipv6 or remove it"),
    (["0.0.0.0/0"], False, "client network 0.0.0.0/0 would make every address a client; list the client "
                           "networks themselves"),
])
def test_bad_client_networks_fail_naming_the_value(run_module, networks, ipv6, message):
    rc, res, calls = run_module({"client_networks": networks, "outside_interface": "eth0", "ipv6": ipv6})
    assert (rc, res["failed"], res["msg"], calls) == (1, True, message, [])
    assert res["changed"] is False


def test_a_missing_outside_interface_fails_listing_the_real_ones(run_module):
    rc, res, calls = run_module({"client_networks": ["10.88.0.0/24"], "outside_interface": "eth9"})
    assert (rc, calls) == (1, [])
    assert res["msg"] == ("outside interface 'eth9' does not exist on this host (interfaces: eth0, lo); set "
                          "outside_interface to the interface that leads to the internet")


HINT = ("; write addresses, networks or '<network> <port>/<proto>' (domain names are resolved by the outputguard "
        "server, not here)")


@pytest.mark.parametrize("value, message", [
    ("api.example.com", "allowed: element 'api.example.com' has an invalid network: 'api.example.com' does not "
                        "appear to be an IPv4 or IPv6 network" + HINT),
    ("198.51.100.10 443/icmp", "allowed: port '443/icmp' is not of the form 443/tcp, 53/udp or 8000-8100/tcp"
                               + HINT),
])
def test_allowed_takes_addresses_networks_and_ports_not_names(value, message):
    with pytest.raises(TargetError) as exc:
        og_iptables_allow.parse_allowed(["198.51.100.10", value])
    assert str(exc.value) == message


def test_allowed_elements_are_parsed_in_order():
    assert [str(e) for e in og_iptables_allow.parse_allowed(
        ["198.51.100.10", "203.0.113.0/24 8000-8100/tcp"])] == ["198.51.100.10/32", "203.0.113.0/24 8000-8100/tcp"]
