"""The product's main path end to end: site.yml deploys everything, an allowed address opens live."""

import pytest

from tests.support.lablib import gateway_elements, probe
from tests.support.nslib import wait_until

ALLOWED = "198.51.100.10"
NEVER = "198.51.100.20"


def test_site_deploys_every_host_and_second_run_changes_nothing(deployed):
    dummy, first, second = deployed
    assert sorted(first) == ["client1", "client2", "gw1", "gw2", "server"]
    assert all(stats["failed"] == 0 and stats["unreachable"] == 0 for stats in first.values())
    assert {host: stats["changed"] for host, stats in second.items()} == {
        "client1": 0, "client2": 0, "gw1": 0, "gw2": 0, "server": 0}


def test_allowed_address_opens_live_and_closes_on_delete(deployed):
    lab = deployed[0]
    kernel_before = gateway_elements(lab)      # other tests' entries (e.g. the UI test's undeletable one) stay
    # Before any entry: refused at once by the gateway (reset), not a time-out.
    assert probe(lab, "c1", ALLOWED) == "refused"
    assert probe(lab, "c1", NEVER) == "refused"

    created = lab.api("POST", "/api/v1/entries", json={"target": ALLOWED})
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["target"] == ALLOWED

    # No Ansible rerun: the gateway follows the server.
    wait_until(lambda: probe(lab, "c1", ALLOWED) == "ok", timeout=10, what="allowed address reachable")
    assert probe(lab, "c2", ALLOWED) == "ok"
    assert probe(lab, "c1", NEVER) == "refused"

    deleted = lab.api("DELETE", "/api/v1/entries/%s" % entry["id"])
    assert deleted.status_code == 204, deleted.text
    wait_until(lambda: probe(lab, "c1", ALLOWED) == "refused", timeout=10, what="deleted address refused")
    assert probe(lab, "c1", NEVER) == "refused"
    assert gateway_elements(lab) == kernel_before


def test_writes_need_a_token(deployed):
    lab = deployed[0]
    assert lab.api("POST", "/api/v1/entries", token=None, json={"target": ALLOWED}).status_code == 401
    assert lab.api("POST", "/api/v1/entries", token="wrong-token-0123456789",
                   json={"target": ALLOWED}).status_code == 401
    # A gateway's token cannot write entries either.
    gw = lab.api("POST", "/api/v1/entries", token=lab.secret("og_gateway_token"), json={"target": ALLOWED})
    assert gw.status_code in (401, 403)


@pytest.mark.parametrize("target, words", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("127.0.0.1", "127.0.0.0/8"),
    ("not an address", "not an address"),
])
def test_bad_targets_are_refused_and_reach_no_gateway(deployed, target, words):
    lab = deployed[0]
    before = lab.api("GET", "/api/v1/entries").json()
    kernel_before = gateway_elements(lab)
    response = lab.api("POST", "/api/v1/entries", json={"target": target})
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert words in error["message"]
    assert set(error) >= {"code", "message"}
    # Same entries and same revision: nothing was committed, so nothing can be published.
    assert lab.api("GET", "/api/v1/entries").json() == before
    # Every gateway has acknowledged that revision with a matching digest, and its kernel set is unchanged.
    wait_until(lambda: all(gw["connected"] and gw["lag"] == 0 and gw["digest_match"]
                           for gw in lab.api("GET", "/api/v1/gateways").json()["items"]),
               timeout=10, what="gateways at the head revision")
    assert gateway_elements(lab) == kernel_before
