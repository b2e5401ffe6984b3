# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' exit contract: the same keys on every exit, failure included, and a diff only with --diff.

Each module runs in-process through main(); what it would reach (commands, netlink, the server) is a stand-in
that fails the way the real one does, so every failure exit is seen with its exact keys.
"""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.outputguard.egress.plugins.module_utils import og_command
from ansible_collections.outputguard.egress.plugins.module_utils.og_api import ApiError
from ansible_collections.outputguard.egress.plugins.module_utils.og_command import CommandError
from ansible_collections.outputguard.egress.plugins.module_utils.og_exit import ModuleExit
from ansible_collections.outputguard.egress.plugins.module_utils.og_routes import RouteTable
from ansible_collections.outputguard.egress.plugins.modules import (
    og_entry, og_entry_info, og_iptables_allow, og_public_routes)

URL = "http://og.example.test"
EXISTING = {"id": 7, "target": "198.51.100.10", "kind": "ip", "ports": [], "deletable": True, "expires_at": None,
            "comment": "old", "created_by": "admin", "created_at": "2026-11-23T10:00:00Z", "addresses": []}


def run(capsys, module, args):
    """(exit code, result without invocation) of one run of a module's main()."""
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    result = json.loads(capsys.readouterr().out)
    result.pop("invocation")
    return exc.value.code, result


class FailingRunner(object):
    """A CommandRunner stand-in: every binary is installed, and every command fails as `ipset` would."""

    def which(self, name):
        return "/usr/sbin/%s" % name

    def __call__(self, argv, stdin=None, check=True):
        raise CommandError("ipset list failed (rc=1): ipset v7.17: Kernel error", cmd=list(argv), rc=1,
                           stdout="", stderr="ipset v7.17: Kernel error\n")


@pytest.fixture
def interfaces(monkeypatch, tmp_path):
    for name in ("lo", "eth1"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(og_iptables_allow.Firewall, "sys_class_net", str(tmp_path))
    monkeypatch.setattr(og_iptables_allow, "CommandRunner", FailingRunner)


IPTABLES_EMPTY = {"changed": False, "elements": [], "added": [], "removed": [], "refused": []}


@pytest.mark.parametrize("diff", [False, True])
def test_og_iptables_allow_keeps_its_keys_when_a_command_fails(capsys, interfaces, diff):
    args = {"client_networks": ["10.88.0.0/24"], "outside_interface": "eth1", "_ansible_diff": diff}
    rc, res = run(capsys, og_iptables_allow, args)
    expected = dict(IPTABLES_EMPTY, failed=True, msg="ipset list failed (rc=1): ipset v7.17: Kernel error",
                    cmd=["ipset", "list", "-t"], rc=1, stdout="", stderr="ipset v7.17: Kernel error\n")
    if diff:
        expected["diff"] = {"before": "", "after": ""}
    assert (rc, res) == (1, expected)


def test_og_iptables_allow_keeps_its_keys_when_an_option_is_wrong(capsys, interfaces):
    rc, res = run(capsys, og_iptables_allow, {"client_networks": ["10.88.0.0/24"], "outside_interface": "wan9"})
    assert (rc, res) == (1, dict(
        IPTABLES_EMPTY, failed=True, cmd=None, rc=None, stdout="", stderr="",
        msg="outside interface 'wan9' does not exist on this host (interfaces: eth1, lo); set outside_interface "
            "to the interface that leads to the internet"))


class NoKernelTable(RouteTable):
    """A RouteTable with no routes of ours, whose gateways all check out, and no netlink behind it."""

    def __init__(self):  # pylint: disable=super-init-not-called
        self.ipr = None

    def close(self):
        pass

    def check_gateways(self, gateways):
        pass

    def own_routes(self, ipv6=True):
        return {}

    def lookup(self, address):
        return None

    def _route(self, verb, key, gws):
        raise AssertionError("the module changed a route: %s %s via %s" % (verb, key, gws))


def test_og_public_routes_fails_cleanly_under_the_root_namespace_guard(capsys, monkeypatch):
    """The guard's CommandError is a failure with the module's keys, not a traceback."""
    # As if in the machine's own namespace (scripts/test may run the suite in one of its own).
    monkeypatch.setattr(og_command, "in_root_netns", lambda: True)
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setattr(og_public_routes, "RouteTable", NoKernelTable)
    rc, res = run(capsys, og_public_routes, {"gateways": ["10.77.0.1"], "internal_networks": ["0.0.0.0/1"],
                                             "_ansible_diff": True})
    assert (rc, res) == (1, {
        "failed": True, "changed": False, "added": [], "changed_routes": [], "removed": [], "management": [],
        "routes": 0, "diff": {"before": "", "after": ""},
        "msg": "refusing to change routes in the machine's root network namespace (OG_REFUSE_ROOT_NETNS=1); run "
               "this inside a network namespace (ip netns exec NAME)"})


def test_og_public_routes_check_mode_returns_the_diff_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setattr(og_public_routes, "RouteTable", NoKernelTable)
    args = {"gateways": ["10.77.0.1"], "internal_networks": ["0.0.0.0/1"], "_ansible_check_mode": True}
    ok = {"changed": True, "added": ["128.0.0.0/1 via 10.77.0.1 metric 100"], "changed_routes": [], "removed": [],
          "management": [], "routes": 1}
    assert run(capsys, og_public_routes, args) == (0, ok)
    assert run(capsys, og_public_routes, dict(args, _ansible_diff=True)) == (0, dict(
        ok, diff={"before": "", "after": "128.0.0.0/1 via 10.77.0.1 metric 100\n"}))


class FakeClient(object):
    """The server as og_entry sees it: one entry, or an answer that is an error."""

    base = URL + "/api/v1"

    def __init__(self, entry=None, error=None):
        self.entry = entry
        self.error = error

    def find_entry(self, target, ports):
        if self.error is not None and self.entry is None:
            raise self.error
        return self.entry

    def create_entry(self, body):
        raise AssertionError("the module created an entry: %r" % (body,))

    def delete_entry(self, entry_id):
        raise AssertionError("the module deleted entry %r" % (entry_id,))

    def read_entry(self, entry_id):
        return dict(self.entry), '"etag-of-%d"' % entry_id

    def update_entry(self, entry_id, fields, etag=None):
        if self.error is not None:
            raise self.error
        raise AssertionError("the module changed entry %r: %r" % (entry_id, fields))

    def list_entries(self, **filters):
        raise self.error

    def get_entry(self, entry_id):
        raise self.error

    def revision(self):
        raise self.error


UNAUTHORIZED = ApiError("the server at %s/api/v1 refused the token (401 unauthorized)" % URL, status=401,
                        code="unauthorized", url=URL + "/api/v1/entries")
API = {"server_url": URL, "token": "oga_test"}


@pytest.fixture
def client(monkeypatch):
    """Set the stand-in server both entry modules will talk to."""
    def use(**kwargs):
        fake = FakeClient(**kwargs)
        for module in (og_entry, og_entry_info):
            monkeypatch.setattr(module.Client, "from_params", staticmethod(lambda params: fake))
    return use


def test_og_entry_fails_with_its_keys_when_the_server_refuses(capsys, client):
    client(error=UNAUTHORIZED)
    rc, res = run(capsys, og_entry, dict(API, target="198.51.100.10"))
    assert (rc, res) == (1, {
        "failed": True, "changed": False, "entry": None, "status": 401, "code": "unauthorized",
        "url": URL + "/api/v1/entries",
        "msg": "the server at %s/api/v1 refused the token (401 unauthorized) (target '198.51.100.10', ports []). "
               "Nothing was changed" % URL})


@pytest.mark.parametrize("diff", [False, True])
def test_og_entry_refusing_to_make_an_undeletable_entry_deletable_keeps_its_keys_and_the_diff_only_when_asked(
        capsys, client, diff):
    pinned = dict(EXISTING, deletable=False)
    client(entry=pinned)
    rc, res = run(capsys, og_entry, dict(API, target="198.51.100.10", deletable=True, _ansible_diff=diff))
    expected = {
        "failed": True, "changed": False, "entry": pinned, "status": -1, "code": "undeletable",
        "url": URL + "/api/v1/entries/7",
        "msg": "entry 7 (198.51.100.10) is undeletable and never becomes deletable again (the server refuses it). "
               "Nothing was changed; make the task's deletable false, or drop it"}
    if diff:
        before = og_entry.diff_text(pinned)
        expected["diff"] = {"before": before, "after": before}
    assert (rc, res) == (1, expected)


def test_og_entry_a_change_refused_by_the_server_keeps_its_keys(capsys, client):
    stale = ApiError("PATCH %s/api/v1/entries/7 failed with 412 precondition_failed: entry 7 changed since it was "
                     "read" % URL, status=412, code="precondition_failed", url=URL + "/api/v1/entries/7")
    client(entry=EXISTING, error=stale)
    rc, res = run(capsys, og_entry, dict(API, target="198.51.100.10", comment="new"))
    assert (rc, res) == (1, {
        "failed": True, "changed": False, "entry": EXISTING, "status": 412, "code": "precondition_failed",
        "url": URL + "/api/v1/entries/7",
        "msg": "PATCH %s/api/v1/entries/7 failed with 412 precondition_failed: entry 7 changed since it was read "
               "(target '198.51.100.10', ports []). Nothing was changed" % URL})


def test_og_entry_bad_input_in_check_mode_fails_with_its_keys(capsys, client):
    client(error=AssertionError("the module asked the server about an input it had refused"))
    rc, res = run(capsys, og_entry, dict(API, target="198.51.100.10", ports=["443"], _ansible_check_mode=True))
    assert res.pop("msg").endswith(". Nothing was changed")
    assert (rc, res) == (1, {"failed": True, "changed": False, "entry": None, "status": -1,
                             "code": "invalid_input", "url": None})


@pytest.mark.parametrize("diff", [False, True])
def test_og_entry_unchanged_entry_has_the_same_keys_and_the_diff_only_when_asked(capsys, client, diff):
    client(entry=EXISTING)
    rc, res = run(capsys, og_entry, dict(API, target="198.51.100.10", comment="old", _ansible_diff=diff))
    expected = {"changed": False, "entry": EXISTING}
    if diff:
        expected["diff"] = {"before": og_entry.diff_text(EXISTING), "after": og_entry.diff_text(EXISTING)}
    assert (rc, res) == (0, expected)


def test_og_entry_info_fails_with_its_keys_on_a_bad_target_and_on_a_refusal(capsys, client):
    client(error=UNAUTHORIZED)
    rc, res = run(capsys, og_entry_info, dict(API, target="198.51.100.10/33"))
    assert res.pop("msg").endswith("; nothing to look up")
    assert (rc, res) == (1, {"failed": True, "changed": False, "entries": [], "revision": None, "status": -1,
                             "code": "invalid_input", "url": None})
    rc, res = run(capsys, og_entry_info, dict(API, id=3))
    assert (rc, res) == (1, {"failed": True, "changed": False, "entries": [], "revision": None, "status": 401,
                             "code": "unauthorized", "url": URL + "/api/v1/entries",
                             "msg": "the server at %s/api/v1 refused the token (401 unauthorized)" % URL})


class Module(object):
    """The two AnsibleModule attributes ModuleExit reads."""

    _diff = False

    def exit_json(self, **kwargs):
        raise AssertionError("exited with %r" % (kwargs,))

    fail_json = exit_json


def test_module_exit_refuses_keys_the_module_does_not_declare():
    out = ModuleExit(Module(), {"elements": []}, {"cmd": None})
    with pytest.raises(KeyError, match="not result keys of this module: element"):
        out.update(element=["198.51.100.10/32"])
    with pytest.raises(KeyError, match="not failure keys of this module: status"):
        out.fail("boom", status=500)
