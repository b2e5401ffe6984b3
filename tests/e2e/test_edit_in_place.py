"""An entry changed in place on the lab (issue 15): og_entry changes the comment and widens the ports of an entry
(PATCH, no delete and create) while a client keeps a connection open through the gateway and a stream of new
connections runs. Not one connection is refused, and the open one carries on."""

import pytest

from tests.e2e.test_failover import Stream
from tests.support import ansiblelib
from tests.support.agentlib import UPLOAD, Background
from tests.support.lablib import LabHost, probe
from tests.support.nslib import wait_until

TARGET = "198.51.100.10"     # the lab's internet serves it on 80 and 8443 (scripts/lab)


def _applied_everywhere(lab, revision):
    gateways = lab.api("GET", "/api/v1/gateways").json()["items"]
    return len(gateways) == 2 and all(g["applied_revision"] >= revision for g in gateways)


@pytest.fixture
def ansible(deployed, tmp_path):
    lab = deployed[0]
    return ansiblelib.Ansible(tmp_path, env={"OG_SERVER_URL": lab.url,
                                             "OG_TOKEN": lab.secret("og_server_admin_token")})


def test_og_entry_changes_the_comment_and_widens_the_ports_without_refusing_a_connection(
        deployed, ansible, tmp_path):
    lab = deployed[0]
    status, result, dummy = ansible.module("og_entry", {"target": TARGET, "ports": ["80/tcp"], "comment": "web"})
    assert status == "CHANGED", result
    entry = result["entry"]
    upload = stream = None
    try:
        wait_until(lambda: _applied_everywhere(lab, entry["revision"]), timeout=30, what="both gateways applied it")
        wait_until(lambda: probe(lab, "c1", TARGET) == "ok", timeout=15, what="port 80 allowed")
        assert probe(lab, "c1", TARGET, 8443) == "refused"          # the entry is port-scoped: 8443 not yet
        upload = Background(LabHost(lab.ns("c1")), UPLOAD, lambda b: [TARGET, b.progress_file, 300], tmp_path,
                            "upload")
        wait_until(lambda: upload.progress().get("sent", 0) > 100000, timeout=20, what="the open connection flowing")
        stream = Stream(lab, "c1", TARGET)
        wait_until(lambda: len(stream.results) >= 10, timeout=30, what="new connections running")

        status, result, printed = ansible.module("og_entry", {
            "target": TARGET, "match_ports": ["80/tcp"], "ports": ["80/tcp", "8443/tcp"],
            "comment": "web and admin"}, "--diff")
        assert status == "CHANGED", result
        changed = result["entry"]
        assert (changed["id"], changed["ports"], changed["comment"]) == (entry["id"], ["80/tcp", "8443/tcp"],
                                                                         "web and admin")
        assert '-ports: ["80/tcp"]\n+ports: ["80/tcp", "8443/tcp"]\n' in printed
        wait_until(lambda: _applied_everywhere(lab, changed["revision"]), timeout=30,
                   what="both gateways applied the change")
        wait_until(lambda: probe(lab, "c1", TARGET, 8443) == "ok", timeout=15, what="port 8443 allowed")
        seen = len(stream.results)
        wait_until(lambda: len(stream.results) >= seen + 10, timeout=30, what="new connections after the change")
        sent = upload.progress()["sent"]
        wait_until(lambda: upload.progress().get("sent", 0) > sent + 100000, timeout=20,
                   what="the open connection carrying on")
    finally:
        if stream is not None:
            stream.stop()
        if upload is not None:
            upload.proc.kill()
            upload.proc.wait(timeout=10)
        lab.api("DELETE", "/api/v1/entries/%d" % entry["id"])
    assert [r for t, r in stream.results if r != "ok"] == [], "refused or failed new connections"
    assert upload.progress()["error"] is None and not upload.progress().get("done")
    # One entry, changed in place: no deletion in the audit log between its creation and this test's delete.
    audit = lab.api("GET", "/api/v1/audit", params={"object_type": "entry", "object_id": entry["id"]}).json()
    assert [e["action"] for e in reversed(audit["items"])] == ["entry.create", "entry.update", "entry.delete"]
