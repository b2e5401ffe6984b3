"""IPv6 entries on the IPv4-only lab: every gateway holds what it can, says so, and gets deltas, not snapshots.

The lab's gateways run with IPv6 off (its default); before "holds" (docs/protocol.md) each of them differed
from the published set forever, and the server answered every revision with a full snapshot."""

import re

from tests.support.lablib import gateway_elements
from tests.support.nslib import wait_until

GATEWAYS = ("gw1", "gw2")
OFF = "IPv6 is off on this gateway"


def snapshots_sent(lab):
    """{(gateway, reason): count} of og_server_snapshots_sent_total, from the server's /metrics."""
    text = lab.api("GET", "/metrics", token=None).text
    found = re.findall(r'^og_server_snapshots_sent_total\{gateway="([^"]+)",reason="(\w+)"\} (\S+)$', text, re.M)
    return {(gw, reason): int(float(value)) for gw, reason, value in found}


def fleet(lab):
    body = lab.api("GET", "/api/v1/gateways").json()
    return body["revision"], {gw["name"]: gw for gw in body["items"]}


def all_in_sync(lab):
    head, gateways = fleet(lab)
    return all(gateways[name]["in_sync"] and gateways[name]["applied_revision"] == head for name in GATEWAYS)


def create(lab, target):
    response = lab.api("POST", "/api/v1/entries", json={"target": target})
    assert response.status_code == 201, response.text
    return response.json()


def test_ipv6_entries_on_the_ipv4_only_lab_cost_no_snapshot_and_are_named_as_not_enforced(deployed):
    lab = deployed[0]
    first = create(lab, "2001:db8::1")
    wait_until(lambda: all_in_sync(lab), timeout=30, what="both gateways in sync with an IPv6 entry present")
    before = snapshots_sent(lab)
    assert {gw for gw, _reason in before} == set(GATEWAYS)      # each had its first snapshot, and that is all

    created = [first]
    for i in range(25):                                         # 50 changes: an IPv6 and an IPv4 entry each
        created.append(create(lab, "2001:db8::1:%x" % i))
        created.append(create(lab, "203.0.113.%d" % (100 + i)))
    wait_until(lambda: all_in_sync(lab), timeout=60, what="both gateways in sync after 50 changes")
    assert snapshots_sent(lab) == before                        # 0 snapshots after the first

    v6 = {"2001:db8::1/128"} | {"2001:db8::1:%x/128" % i for i in range(25)}
    _head, gateways = fleet(lab)
    for name in GATEWAYS:
        gw = gateways[name]
        assert (gw["status"], gw["families"]) == ("in sync; not enforced: 26 skipped: no IPv6", [4])
        assert [(d["kind"], d["label"], d["count"]) for d in gw["differences"]] == [
            ("skipped", "skipped: no IPv6", 26)]
        assert gw["not_enforced"]["count"] == 26 and gw["not_enforced"]["reasons"] == ["IPv6 off"]
        assert {e["element"]: (e["reason"], e["message"]) for e in gw["not_enforced"]["elements"]} == {
            e: ("family_disabled", OFF) for e in v6}
    entry = lab.api("GET", "/api/v1/entries/%d" % first["id"]).json()
    assert entry["elements"] == [{"element": "2001:db8::1/128", "not_enforced": [
        {"gateway": name, "reason": "family_disabled", "message": OFF} for name in GATEWAYS]}]
    v4 = lab.api("GET", "/api/v1/entries/%d" % created[2]["id"]).json()
    assert v4["elements"] == [{"element": "203.0.113.100/32", "not_enforced": []}]
    why = lab.api("GET", "/api/v1/addresses/2001:db8::1").json()
    assert [item["not_enforced"] for item in why["entries"]] == [
        [{"gateway": name, "reason": "family_disabled", "message": OFF} for name in GATEWAYS]]
    assert {"203.0.113.%d" % (100 + i) for i in range(25)} <= set(gateway_elements(lab))

    for entry in created:
        assert lab.api("DELETE", "/api/v1/entries/%d" % entry["id"]).status_code == 204
    wait_until(lambda: all_in_sync(lab), timeout=60, what="both gateways in sync after the deletions")
    assert snapshots_sent(lab) == before
    _head, gateways = fleet(lab)
    assert {name: gateways[name]["not_enforced"]["count"] for name in GATEWAYS} == {"gw1": 0, "gw2": 0}
