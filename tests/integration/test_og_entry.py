"""og_entry, og_entry_info and playbooks/entries.yml for real: the ansible CLIs against a real og-server.

The server is og-server (gunicorn, SQLite) on 127.0.0.1 with the resolver off, so nothing leaves loopback. The
collection is found through a temporary ANSIBLE_COLLECTIONS_PATH whose ansible_collections/outputguard/egress is
a symlink to this repository. Every outcome is checked through the REST API, not only through what Ansible says.
"""

import json
import os

import pytest
import requests

from tests.support import TOP, ansiblelib, free_port
from tests.support.serverlib import Server

PLAYBOOK = os.path.join(TOP, "playbooks", "entries.yml")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("og-entry-server")), resolver_enabled=False)
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of its own, for the exclusive sync that deletes whatever is not listed."""
    srv = Server(str(tmp_path / "server"), resolver_enabled=False)
    yield srv
    srv.stop()


class Ansible(ansiblelib.Ansible):
    """The module runner with the server's URL and admin token in the environment, and playbooks/entries.yml."""

    def __init__(self, server, tmp_path):
        super().__init__(tmp_path, env={"OG_SERVER_URL": server.url, "OG_TOKEN": server.admin})
        self.server = server

    def playbook(self, extra, *flags):
        """playbooks/entries.yml with the token and URL as variables (not in the environment)."""
        env = {k: v for k, v in self.env.items() if k not in ("OG_SERVER_URL", "OG_TOKEN")}
        return super().playbook(PLAYBOOK, dict({"og_api_url": self.server.url, "og_api_token": self.server.admin},
                                               **extra), *flags, env=env)


@pytest.fixture
def ansible(server, tmp_path):
    return Ansible(server, tmp_path)


def api(server, method, path, token=None, **kw):
    return requests.request(method, server.url + path, timeout=30,
                            headers={"Authorization": "Bearer " + (token or server.admin)}, **kw)


def listed(server, **query):
    """Every entry matching the query, as (target, ports...) -> entry, and the revision."""
    body = api(server, "GET", "/api/v1/entries", params=dict(query, per_page=500)).json()
    return {(e["target"],) + tuple(e["ports"]): e for e in body["items"]}, body["revision"]


def revision(server):
    return listed(server, q="no-such-entry")[1]


def operator_view(entry):
    return {k: entry[k] for k in ("id", "target", "kind", "ports", "deletable", "expires_at", "comment")}


def test_create_then_the_same_task_changes_nothing(server, ansible):
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.11", "ports": ["443/TCP", "53/udp"],
                                                        "comment": "partner API",
                                                        "expires_at": "2031-06-30T20:00:00+02:00"})
    assert status == "CHANGED"
    entries, head = listed(server, q="198.51.100.11")
    assert list(entries) == [("198.51.100.11", "443/tcp", "53/udp")]
    stored = entries[("198.51.100.11", "443/tcp", "53/udp")]
    assert operator_view(stored) == {"id": stored["id"], "target": "198.51.100.11", "kind": "ip",
                                     "ports": ["443/tcp", "53/udp"], "deletable": True,
                                     "expires_at": "2031-06-30T18:00:00Z", "comment": "partner API"}
    assert operator_view(result["entry"]) == operator_view(stored) and result["entry"]["revision"] == head

    # The same entry written differently: /32, other case and order of ports, the expiry in UTC.
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.11/32", "ports": ["53/UDP", "443/tcp"],
                                                        "comment": "partner API", "expires_at": "2031-06-30T18:00:00Z"})
    assert status == "SUCCESS" and result["changed"] is False
    assert operator_view(result["entry"]) == operator_view(stored)
    assert listed(server, q="198.51.100.11") == (entries, head)


def test_check_mode_creates_nothing_and_shows_the_diff(server, ansible):
    before = revision(server)
    status, result, printed = ansible.module("og_entry", {"target": "198.51.100.12", "comment": "dry run"},
                                             "--check", "--diff")
    assert status == "CHANGED"
    assert result["entry"] == {"id": None, "target": "198.51.100.12", "kind": "ip", "wildcard": False, "ports": [],
                               "deletable": True, "expires_at": None, "comment": "dry run"}
    assert [line for line in printed.splitlines() if line.startswith(("+", "-"))] == [
        "--- before", "+++ after", '+comment: "dry run"', "+deletable: true", "+expires_at: null", "+id: null",
        "+ports: []", '+target: "198.51.100.12"']
    assert listed(server, q="198.51.100.12") == ({}, before)


def test_a_wildcard_entry_is_created_once_found_again_and_kept_apart_from_its_zone(server, ansible):
    status, result, dummy = ansible.module("og_entry", {"target": "*.CDN.Wild.Example.", "ports": ["443/tcp"]},
                                           "--check")
    assert status == "CHANGED" and result["entry"]["wildcard"] is True and result["entry"]["id"] is None
    assert listed(server, q="cdn.wild.example")[0] == {}
    status, result, dummy = ansible.module("og_entry", {"target": "*.CDN.Wild.Example.", "ports": ["443/tcp"],
                                                        "comment": "partner CDN"})
    assert status == "CHANGED"
    entries, head = listed(server, q="cdn.wild.example")
    stored = entries[("*.cdn.wild.example", "443/tcp")]
    assert (stored["kind"], stored["wildcard"], stored["addresses"]) == ("domain", True, [])
    assert result["entry"]["id"] == stored["id"] and result["entry"]["wildcard"] is True
    # Written differently (case, trailing dot): the same entry, nothing changes.
    status, result, dummy = ansible.module("og_entry", {"target": "*.cdn.wild.example", "ports": ["443/TCP"],
                                                        "comment": "partner CDN"})
    assert status == "SUCCESS" and result["changed"] is False and result["entry"]["id"] == stored["id"]
    # The zone itself is another entry, not the wildcard.
    status, result, dummy = ansible.module("og_entry", {"target": "cdn.wild.example", "ports": ["443/tcp"]})
    assert status == "CHANGED" and result["entry"]["wildcard"] is False and result["entry"]["id"] != stored["id"]
    status, result, dummy = ansible.module("og_entry_info", {"target": "*.CDN.wild.example"}, "--check")
    assert status == "SUCCESS" and [e["id"] for e in result["entries"]] == [stored["id"]]
    status, result, dummy = ansible.module("og_entry", {"target": "*.cdn.wild.example", "ports": ["443/tcp"],
                                                        "state": "absent"})
    assert status == "CHANGED" and ("*.cdn.wild.example", "443/tcp") not in listed(server, q="wild.example")[0]


def test_a_different_entry_is_changed_in_place_and_the_diff_shows_the_change(server, ansible):
    old = server.add("198.51.100.13", comment="ticket 1")
    before = revision(server)
    status, result, printed = ansible.module("og_entry", {"target": "198.51.100.13", "comment": "ticket 2"},
                                             "--check", "--diff")
    assert status == "CHANGED" and revision(server) == before
    assert result["entry"]["id"] == old["id"] and result["entry"]["comment"] == "ticket 2"
    assert '-comment: "ticket 1"\n+comment: "ticket 2"\n' in printed
    assert operator_view(listed(server, q="198.51.100.13")[0][("198.51.100.13",)]) == operator_view(old)

    status, result, printed = ansible.module("og_entry", {"target": "198.51.100.13", "comment": "ticket 2",
                                                          "expires_at": "2031-01-01T01:00:00+01:00"}, "--diff")
    assert status == "CHANGED", result
    entries, after = listed(server, q="198.51.100.13")
    [stored] = entries.values()
    # The same entry (id, creator), changed in place; a comment and an expiry are no revision (no set changes).
    assert (stored["id"], stored["created_by"], stored["comment"], stored["expires_at"]) == (
        old["id"], old["created_by"], "ticket 2", "2031-01-01T00:00:00Z")
    assert after == before and result["entry"]["revision"] is None
    assert operator_view(result["entry"]) == operator_view(stored)
    assert '-comment: "ticket 1"\n+comment: "ticket 2"\n' in printed and '+expires_at: "2031-01-01T00:00:00Z"' in printed
    assert ansible.module("og_entry", {"target": "198.51.100.13", "comment": "ticket 2"})[0] == "SUCCESS"
    # Without an expiry again: expires_at "" clears it. replace has no effect any more (the same change in place).
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.13", "expires_at": "", "replace": True})
    assert status == "CHANGED" and result["entry"]["expires_at"] is None and result["entry"]["id"] == old["id"]
    audit = api(server, "GET", "/api/v1/audit", params={"action": "entry.update", "object_id": old["id"]}).json()
    assert [(e["before"]["comment"], e["after"]["comment"]) for e in audit["items"]] == [
        ("ticket 2", "ticket 2"), ("ticket 1", "ticket 2")]


def test_match_ports_changes_the_ports_of_the_entry_in_place_once(server, ansible):
    old = server.add("198.51.100.18", ports=["80/tcp"], comment="web")
    before = revision(server)
    task = {"target": "198.51.100.18", "match_ports": ["80/TCP"], "ports": ["8443/tcp", "80/tcp"],
            "comment": "web and admin"}
    status, result, printed = ansible.module("og_entry", task, "--check", "--diff")
    assert status == "CHANGED" and revision(server) == before
    assert '-ports: ["80/tcp"]\n+ports: ["80/tcp", "8443/tcp"]\n' in printed
    status, result, printed = ansible.module("og_entry", task, "--diff")
    assert status == "CHANGED", result
    entries, after = listed(server, q="198.51.100.18")
    assert list(entries) == [("198.51.100.18", "80/tcp", "8443/tcp")]
    stored = entries[("198.51.100.18", "80/tcp", "8443/tcp")]
    assert (stored["id"], stored["comment"]) == (old["id"], "web and admin")
    assert after == before + 1 and result["entry"]["revision"] == after      # one revision: the new element
    assert ansible.module("og_entry", task)[0] == "SUCCESS"                  # found by its new ports: no change
    # Neither the ports nor match_ports exist: a new entry with the ports.
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.19", "match_ports": ["80/tcp"],
                                                        "ports": ["443/tcp"]})
    assert status == "CHANGED" and list(listed(server, q="198.51.100.19")[0]) == [("198.51.100.19", "443/tcp")]
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.18", "match_ports": ["80"]})
    assert (status, result["code"]) == ("FAILED!", "invalid_input") and "match_ports" in result["msg"]


def test_deletability_is_admin_only_and_one_way(server, ansible):
    entry = server.add("198.51.100.21")
    editor = api(server, "POST", "/api/v1/tokens", json={"name": "og-entry-editor", "role": "editor"}).json()["token"]
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.21", "deletable": False,
                                                        "token": editor})
    assert (status, result["status"], result["code"]) == ("FAILED!", 403, "forbidden"), result
    assert "only an admin may make entry %d" % entry["id"] in result["msg"]
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.21", "deletable": False})
    assert status == "CHANGED" and result["entry"]["deletable"] is False and result["entry"]["id"] == entry["id"]
    before = revision(server)
    for flags in ((), ("--check",)):
        status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.21", "deletable": True}, *flags)
        assert (status, result["code"]) == ("FAILED!", "undeletable")
        assert "never becomes deletable again" in result["msg"]
    assert revision(server) == before and listed(server, q="198.51.100.21")[0][("198.51.100.21",)]["deletable"] \
        is False


def test_absent_deletes_the_entry_once(server, ansible):
    entry = server.add("198.51.100.14", ports=["443/tcp"])
    status, result, printed = ansible.module("og_entry", {"target": "198.51.100.14", "ports": ["443/tcp"],
                                                          "state": "absent"}, "--diff")
    assert status == "CHANGED" and result["entry"] is None
    assert "-id: %d\n" % entry["id"] in printed
    assert api(server, "GET", "/api/v1/entries/%d" % entry["id"]).status_code == 404
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.14", "ports": ["443/tcp"],
                                                        "state": "absent"})
    assert status == "SUCCESS" and result["changed"] is False


def test_absent_on_an_undeletable_entry_fails_before_trying_and_leaves_it(server, ansible):
    entry = server.add("198.51.100.15", deletable=False, expires_at="2031-01-01T00:00:00Z")
    before = revision(server)
    for flags in ((), ("--check",)):
        status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.15", "state": "absent"}, *flags)
        assert status == "FAILED!"
        # The module's own message (the server's would say "cannot be deleted"): it did not send the DELETE.
        assert result["msg"] == (
            "entry %d (198.51.100.15) is undeletable: it was created with deletable=false and the server refuses "
            "to delete it before it expires at 2031-01-01T00:00:00Z. Nothing was changed; remove the task, or wait "
            "for the entry to expire" % entry["id"])
        assert result["code"] == "undeletable"
    assert operator_view(api(server, "GET", "/api/v1/entries/%d" % entry["id"]).json()) == operator_view(entry)
    assert revision(server) == before
    # Its comment can change in place (no revision); deleting it stays refused.
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.15", "comment": "new", "replace": True})
    assert status == "CHANGED" and result["entry"]["id"] == entry["id"] and result["entry"]["comment"] == "new"
    assert revision(server) == before


@pytest.mark.parametrize("args", [
    {"target": "10.1.2.3"},
    {"target": "not an address"},
    {"target": "198.51.100.16", "ports": ["443"]},
    {"target": "*.com"},
    {"target": "a.*.example.com"},
    {"target": "198.51.100.16", "expires_at": "2001-01-01T00:00:00Z"},
])
def test_bad_input_fails_with_the_servers_message_and_the_value(server, ansible, args):
    answer = api(server, "POST", "/api/v1/entries", json=args)     # what the server itself says
    assert answer.status_code == 400
    error = answer.json()["error"]
    before = revision(server)
    status, result, dummy = ansible.module("og_entry", args)
    assert status == "FAILED!"
    assert result["msg"] == "POST %s/api/v1/entries failed with 400 %s: %s (target %r, ports %r). Nothing was " \
                            "changed" % (server.url, error["code"], error["message"], args["target"],
                                         args.get("ports", []))
    assert (result["status"], result["code"]) == (400, error["code"])
    assert revision(server) == before


def test_a_wrong_token_a_viewer_token_and_a_dead_server_fail_clearly(server, ansible):
    before = revision(server)
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.17"}, env={"OG_TOKEN": "oga_wrong"})
    assert status == "FAILED!" and result["status"] == 401
    assert result["msg"].startswith("the server at %s/api/v1 refused the token (401 unauthorized: a valid API token "
                                    "is required" % server.url)
    assert "Check the token option (or OG_TOKEN)" in result["msg"]
    assert "oga_wrong" not in json.dumps(result)
    assert {k: v for k, v in result.items() if k != "msg"} == {
        "changed": False, "entry": None, "status": 401, "code": "unauthorized",
        "url": server.url + "/api/v1/entries?page=1&per_page=500&q=198.51.100.17"}

    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.17", "token": server.viewer})
    assert status == "FAILED!" and result["status"] == 403
    assert "has the role viewer, which may not change entries. Use a token with the editor or admin role" \
        in result["msg"]

    dead = "http://127.0.0.1:%d" % free_port()
    status, result, dummy = ansible.module("og_entry", {"target": "198.51.100.17"}, env={"OG_SERVER_URL": dead})
    assert status == "FAILED!" and result["status"] == -1
    assert result["msg"].startswith("cannot reach the outputguard server at %s/api/v1 (GET /entries): " % dead)
    assert revision(server) == before and listed(server, q="198.51.100.17")[0] == {}


def test_og_entry_info_filters(server, ansible):
    ip = server.add("198.51.100.40", comment="info-test")
    cidr = server.add("198.51.100.64/27", ports=["443/tcp"], deletable=False, comment="info-test")
    domain = server.add("Info.Example.COM.", expires_at="2031-01-01T00:00:00Z", comment="info-test")
    head = revision(server)

    def info(**args):
        status, result, dummy = ansible.module("og_entry_info", args, "--check")
        assert status == "SUCCESS" and result["changed"] is False, result
        assert result["revision"] == head
        return [e["id"] for e in result["entries"]]

    assert info(q="INFO-TEST") == [domain["id"], cidr["id"], ip["id"]]       # newest first
    assert info(q="info-test", kind="cidr") == [cidr["id"]]
    assert info(q="info-test", deletable=False) == [cidr["id"]]
    assert info(q="info-test", deletable=True) == [domain["id"], ip["id"]]
    assert info(q="info-test", expiring=True) == [domain["id"]]
    assert info(q="info-test", expiring=False, kind="ip") == [ip["id"]]
    assert info(target="info.example.com.") == [domain["id"]]
    assert info(target="198.51.100.64/27", ports=["443/TCP"]) == [cidr["id"]]
    assert info(target="198.51.100.64/27", ports=[]) == []
    assert info(target="198.51.100.40") == [ip["id"]]      # not the .40 of another entry's comment or target
    assert info(id=cidr["id"]) == [cidr["id"]]
    assert info(id=999999) == []
    assert info(q="info-test", creator="nobody") == []
    status, result, dummy = ansible.module("og_entry_info", {"q": "info-test", "kind": "host"})
    assert status == "FAILED!" and "kind" in result["msg"] and "host" in result["msg"]


def test_entries_playbook_adds_only_then_syncs_exclusively(fresh_server, tmp_path):
    srv = fresh_server
    ansible = Ansible(srv, tmp_path)
    unlisted = srv.add("198.51.100.50", comment="made in the UI")
    pinned = srv.add("198.51.100.51", deletable=False, comment="pinned")
    srv.add("198.51.100.52")
    wanted = {"og_entries": [
        {"target": "198.51.100.52"},
        {"target": "198.51.100.60", "ports": ["443/tcp"], "comment": "from git"},
        {"target": "Sync.Example.COM", "ports": ["443/tcp", "80/tcp"], "deletable": False},
    ]}
    after_add = {("198.51.100.50",), ("198.51.100.51",), ("198.51.100.52",), ("198.51.100.60", "443/tcp"),
                 ("sync.example.com", "443/tcp", "80/tcp")}

    recap, out = ansible.playbook(wanted)
    assert (recap["changed"], recap["failed"]) == (1, 0), out
    assert set(listed(srv)[0]) == after_add
    assert listed(srv)[0][("sync.example.com", "443/tcp", "80/tcp")]["deletable"] is False

    # Again, verbosely: nothing changes and the token appears nowhere.
    recap, out = ansible.playbook(wanted, "-vvv")
    assert (recap["changed"], recap["failed"]) == (0, 0), out
    assert srv.admin not in out

    # Exclusive, in check mode: the unlisted deletable entry would go; nothing goes.
    head = revision(srv)
    recap, out = ansible.playbook(dict(wanted, og_entries_exclusive=True), "--check", "--diff")
    assert (recap["changed"], recap["failed"]) == (1, 0), out
    assert "-id: %d\n" % unlisted["id"] in out and "-id: %d\n" % pinned["id"] not in out
    assert set(listed(srv)[0]) == after_add and revision(srv) == head

    # Scoped to another creator's entries, the unlisted ones (made with the admin token) stay.
    recap, out = ansible.playbook(dict(wanted, og_entries_exclusive=True, og_entries_exclusive_creator="ci-bot"))
    assert (recap["changed"], recap["failed"]) == (0, 0), out
    assert set(listed(srv)[0]) == after_add and revision(srv) == head

    recap, out = ansible.playbook(dict(wanted, og_entries_exclusive=True))
    assert (recap["changed"], recap["failed"]) == (1, 0), out
    assert set(listed(srv)[0]) == after_add - {("198.51.100.50",)}      # the undeletable one stays
    recap, out = ansible.playbook(dict(wanted, og_entries_exclusive=True))
    assert (recap["changed"], recap["failed"]) == (0, 0), out

    # An item with state absent goes; without og_entries an exclusive run refuses to delete everything.
    gone = {"og_entries": wanted["og_entries"][1:] + [{"target": "198.51.100.52", "state": "absent"}]}
    recap, out = ansible.playbook(gone)
    assert (recap["changed"], recap["failed"]) == (1, 0), out
    assert set(listed(srv)[0]) == after_add - {("198.51.100.50",), ("198.51.100.52",)}
    head = revision(srv)
    recap, out = ansible.playbook({"og_entries_exclusive": True})
    assert recap["failed"] == 1
    assert "og_entries_exclusive=true deletes every deletable entry that is not in og_entries, but og_entries is " \
           "not set" in out
    recap, out = ansible.playbook({"og_entries": [{"target": "198.51.100.70", "port": "443/tcp"}]})
    assert recap["failed"] == 1 and "(unknown: port)" in out
    assert revision(srv) == head
