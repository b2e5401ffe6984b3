# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""og_public_routes's argument handling: bad arguments fail naming the value before netlink is opened."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.outputguard.egress.plugins.modules import og_public_routes

EMPTY_RESULT = {"changed": False, "added": [], "changed_routes": [], "removed": [], "management": [], "routes": 0}


@pytest.fixture
def run_module(monkeypatch, capsys):
    """Run the module with these arguments; return (exit code, result dict, route tables opened)."""
    opened = []

    def route_table():
        opened.append(True)
        raise AssertionError("the module opened netlink while checking its arguments")

    monkeypatch.setattr(og_public_routes, "RouteTable", route_table)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)

    def run(args):
        with patch_module_args(args):
            with pytest.raises(SystemExit) as exc:
                og_public_routes.main()
        return exc.value.code, json.loads(capsys.readouterr().out), opened
    return run


@pytest.mark.parametrize("args, message", [
    ({}, "no gateway given; name at least one gateway address on this host's LAN"),
    ({"gateways": ["10.77.0.1", "gw1.example"]},
     "gateway 'gw1.example' is not an IP address; give the gateway's address on this host's LAN, e.g. 10.77.0.1"),
    ({"gateways": ["10.77.0.1", " 10.77.0.1"]},
     "gateway 10.77.0.1 is listed twice; list each gateway once (the first is the primary)"),
    ({"gateways": ["10.77.0.1"], "ipv6": True},
     "ipv6 is requested but no gateway is an IPv6 address (gateways: 10.77.0.1); add the gateway's IPv6 address "
     "or turn ipv6 off"),
    ({"gateways": ["fd00:77::1"], "ipv6": True},
     "no gateway is an IPv4 address (gateways: fd00:77::1); the public IPv4 ranges need one"),
    ({"gateways": ["10.77.0.1"], "exclude": ["203.0.113.0/24", "office"]},
     "exclude network 'office' is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)"),
    ({"gateways": ["10.77.0.1"], "internal_networks": ["10.0.0.0/8", "10.0.0.0/40"]},
     "internal network '10.0.0.0/40' is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)"),
])
def test_bad_arguments_fail_naming_the_value(run_module, args, message):
    rc, res, opened = run_module(args)
    assert (rc, res.pop("failed"), res.pop("msg"), opened) == (1, True, message, [])
    res.pop("invocation")
    assert res == EMPTY_RESULT


def test_absent_needs_no_gateways_and_still_checks_exclude(run_module):
    rc, res, opened = run_module({"state": "absent", "exclude": ["203.0.113.0/33"]})
    assert (rc, res["msg"], opened) == (
        1, "exclude network '203.0.113.0/33' is not an IPv4/IPv6 network in CIDR notation (e.g. 10.0.0.0/8)", [])


@pytest.mark.parametrize("args, message", [
    ({"gateways": ["10.77.0.1"], "mode": "roundrobin"},
     "value of mode must be one of: failover, ecmp, got: roundrobin"),
    ({"gateways": ["10.77.0.1"], "state": "gone"}, "value of state must be one of: present, absent, got: gone"),
    ({"gateway": "10.77.0.1"},
     "Unsupported parameters for (basic.py) module: gateway. Supported parameters include: exclude, gateways, "
     "internal_networks, ipv6, mode, state."),
])
def test_ansible_rejects_bad_choices_and_names(run_module, args, message):
    rc, res, opened = run_module(args)
    assert (rc, res["msg"], opened) == (1, message, [])


@pytest.mark.parametrize("ssh_connection, addresses", [
    ("203.0.113.50 52144 10.10.0.5 22", ["203.0.113.50"]),
    ("::ffff:203.0.113.50 52144 10.10.0.5 22", ["203.0.113.50"]),
    ("2001:db8::7 52144 2001:db8::5 22", ["2001:db8::7"]),
    ("", []),
    ("not-an-address 1 2 3", []),
])
def test_the_management_address_comes_from_ssh_connection(ssh_connection, addresses):
    assert og_public_routes.management_addresses({"SSH_CONNECTION": ssh_connection}) == addresses
