"""The REST API: every endpoint for success, each kind of bad input, and each role allowed and refused.

Every answer is validated against the OpenAPI document the app serves (conftest.Api)."""

import datetime as dt
import json

import pytest

from server_app.models import Gateway, db

ROLES = ("viewer", "editor", "admin", "gateway")


def ids(response):
    return [item["id"] for item in response.get_json()["items"]]


def test_the_openapi_document_is_served_without_a_token(api):
    doc = api.client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {"/entries", "/entries/{entry_id}", "/addresses/{address}", "/audit", "/gateways"} <= set(doc["paths"])


def test_create_get_list_delete(api):
    created = api.post("/api/v1/entries", json={"target": "198.51.100.10", "ports": ["443/tcp"],
                                                "comment": "partner API"})
    assert created.status_code == 201
    entry = created.get_json()
    assert created.headers["Location"].endswith("/api/v1/entries/%d" % entry["id"])
    assert entry["target"] == "198.51.100.10" and entry["kind"] == "ip" and entry["ports"] == ["443/tcp"]
    assert entry["created_by"] == "admin-test" and entry["revision"] == 1
    assert entry["addresses"][0]["address"] == "198.51.100.10/32" and entry["addresses"][0]["source"] == "typed"
    assert api.get("/api/v1/entries/%d" % entry["id"]).get_json()["target"] == "198.51.100.10"
    listed = api.get("/api/v1/entries").get_json()
    assert listed["total"] == 1 and listed["revision"] == 1
    assert api.delete("/api/v1/entries/%d" % entry["id"]).status_code == 204
    assert api.get("/api/v1/entries/%d" % entry["id"]).status_code == 404
    assert api.delete("/api/v1/entries/%d" % entry["id"]).status_code == 404
    assert api.get("/api/v1/entries").get_json()["revision"] == 2


@pytest.mark.parametrize("same", ["198.51.100.10/32", " 198.51.100.10 "])
def test_targets_are_normalised_and_a_duplicate_names_the_existing_entry(api, same):
    first = api.post("/api/v1/entries", json={"target": "198.51.100.10"}).get_json()
    dup = api.post("/api/v1/entries", json={"target": same})
    assert dup.status_code == 409
    assert "id %d" % first["id"] in dup.get_json()["error"]["message"]
    # Other ports make another entry.
    assert api.post("/api/v1/entries", json={"target": same, "ports": ["443/tcp"]}).status_code == 201


def test_domains_are_lower_cased_without_the_trailing_dot(api):
    entry = api.post("/api/v1/entries", json={"target": "Partner.Example.COM."}).get_json()
    assert entry["target"] == "partner.example.com" and entry["kind"] == "domain"
    assert api.post("/api/v1/entries", json={"target": "partner.example.com"}).status_code == 409


@pytest.mark.parametrize("body, code, words", [
    ({"target": "10.0.0.0/8"}, "invalid_target", "10.0.0.0/8"),
    ({"target": "10.1.2.3"}, "invalid_target", "10.0.0.0/8"),
    ({"target": "172.0.0.0/11"}, "invalid_target", "172.16.0.0/12"),    # overlaps at all
    ({"target": "0.0.0.0/0"}, "invalid_target", "0.0.0.0/0"),
    ({"target": "::/0"}, "invalid_target", "::/0"),
    ({"target": "127.0.0.1"}, "invalid_target", "127.0.0.0/8"),
    ({"target": "::ffff:10.0.0.1"}, "invalid_target", "::ffff:0:0/96"),
    ({"target": "64:ff9b::a00:1"}, "invalid_target", "embeds the IPv4 address 10.0.0.1 (NAT64 well-known prefix"),
    ({"target": "2002:a00:1::"}, "invalid_target", "embeds the IPv4 address 10.0.0.1 (6to4 prefix"),
    ({"target": "fd00::1"}, "invalid_target", "fc00::/7"),
    ({"target": "12.0.0.0/7"}, "invalid_target", "/8"),                 # shorter than the minimum prefix
    ({"target": "not an address"}, "invalid_target", "not an address"),
    ({"target": ""}, "missing_target", "target is required"),
    ({}, "missing_target", "target is required"),
    ({"target": 5}, "invalid_target", "string"),
    ({"target": "198.51.100.10", "ports": ["443"]}, "invalid_ports", "443"),
    ({"target": "198.51.100.10", "ports": ["70000/tcp"]}, "invalid_ports", "70000"),
    ({"target": "198.51.100.10", "ports": "443/tcp"}, "invalid_ports", "list"),
    ({"target": "198.51.100.10", "deletable": "no"}, "invalid_deletable", "'no'"),
    ({"target": "198.51.100.10", "expires_at": "tomorrow"}, "invalid_expires_at", "'tomorrow'"),
    ({"target": "198.51.100.10", "expires_at": "2001-01-01T00:00:00Z"}, "invalid_expires_at", "past"),
    ({"target": "198.51.100.10", "colour": "red"}, "unknown_field", "colour"),
    ({"target": "198.51.100.10", "grace_seconds": 60}, "invalid_grace_seconds", "198.51.100.10"),
    ({"target": "example.com", "grace_seconds": -1}, "invalid_grace_seconds", "-1"),
    ([], "invalid_body", "JSON object"),
])
def test_bad_input_is_a_4xx_naming_the_problem_and_changes_nothing(api, body, code, words):
    response = api.post("/api/v1/entries", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code and words in error["message"], error
    listed = api.get("/api/v1/entries").get_json()
    assert listed["total"] == 0 and listed["revision"] == 0
    assert api.get("/api/v1/audit?object_type=entry&outcome=done").get_json()["total"] == 0
    (refused,) = api.get("/api/v1/audit?object_type=entry&outcome=refused").get_json()["items"]   # with the reason
    assert refused["action"] == "entry.create" and refused["reason"] == error["message"]


def test_a_body_that_is_not_json_is_refused(api):
    response = api.post("/api/v1/entries", data="target=198.51.100.10",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("role, read, write, admin", [
    ("viewer", 200, 403, 403), ("editor", 200, 201, 403), ("admin", 200, 201, 200), ("gateway", 403, 403, 403)])
def test_roles(api, role, read, write, admin):
    assert api.get("/api/v1/entries", token=role).status_code == read
    assert api.get("/api/v1/gateways", token=role).status_code == read
    assert api.get("/api/v1/audit", token=role).status_code == read
    assert api.get("/api/v1/addresses/198.51.100.10", token=role).status_code == read
    assert api.post("/api/v1/entries", token=role, json={"target": "198.51.100.10"}).status_code == write
    assert api.get("/api/v1/tokens", token=role).status_code == admin
    refused = api.post("/api/v1/entries", token=role, json={"target": "198.51.100.11"})
    if refused.status_code == 403:
        assert role in refused.get_json()["error"]["message"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer short", "Bearer " + "x" * 40, "Basic abc"])
def test_no_valid_token_is_401(api, header):
    headers = {"Authorization": header} if header else {}
    assert api.call("GET", "/api/v1/entries", token=None, headers=headers).status_code == 401
    assert api.call("POST", "/api/v1/entries", token=None, headers=dict(headers),
                    json={"target": "198.51.100.10"}).status_code == 401


def test_undeletable_entries_are_refused_with_the_reason(api):
    entry = api.post("/api/v1/entries", json={"target": "203.0.113.10", "deletable": False}).get_json()
    response = api.delete("/api/v1/entries/%d" % entry["id"])
    assert response.status_code == 403
    assert "undeletable" in response.get_json()["error"]["message"]
    assert api.get("/api/v1/entries/%d" % entry["id"]).status_code == 200


def test_list_filters_and_pagination(api):
    for i in range(12):
        api.post("/api/v1/entries", json={"target": "198.51.100.%d" % (i + 1), "comment": "batch %d" % i})
    api.post("/api/v1/entries", json={"target": "203.0.113.0/24", "deletable": False})
    api.post("/api/v1/entries", token="editor", json={"target": "saas.example.com"})
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    api.post("/api/v1/entries", json={"target": "198.51.100.200", "expires_at": later})
    assert api.get("/api/v1/entries").get_json()["total"] == 15
    page = api.get("/api/v1/entries?per_page=5&page=3").get_json()
    assert len(page["items"]) == 5 and page["total"] == 15
    assert len(api.get("/api/v1/entries?per_page=5&page=4").get_json()["items"]) == 0
    assert api.get("/api/v1/entries?kind=cidr").get_json()["total"] == 1
    assert api.get("/api/v1/entries?kind=domain").get_json()["items"][0]["target"] == "saas.example.com"
    assert api.get("/api/v1/entries?creator=editor-test").get_json()["total"] == 1
    assert api.get("/api/v1/entries?deletable=false").get_json()["items"][0]["target"] == "203.0.113.0/24"
    assert api.get("/api/v1/entries?expiring=true").get_json()["items"][0]["target"] == "198.51.100.200"
    assert api.get("/api/v1/entries?q=batch%201").get_json()["total"] == 3   # batch 1, 10, 11
    assert api.get("/api/v1/entries?q=100.7").get_json()["total"] == 1
    for bad in ("kind=host", "page=0", "per_page=501", "page=x", "deletable=maybe"):
        response = api.get("/api/v1/entries?" + bad)
        assert response.status_code == 400, bad
        assert bad.split("=")[1] in response.get_json()["error"]["message"] or "page" in bad


def test_why_is_this_address_allowed(api):
    host = api.post("/api/v1/entries", json={"target": "198.51.100.10"}).get_json()
    net = api.post("/api/v1/entries", json={"target": "198.51.100.0/24", "ports": ["443/tcp"],
                                            "deletable": False}).get_json()
    why = api.get("/api/v1/addresses/198.51.100.10").get_json()
    assert why["allowed"] is True and why["internal"] == []
    assert [(e["entry_id"], e["network"]) for e in why["entries"]] == [
        (host["id"], "198.51.100.10/32"), (net["id"], "198.51.100.0/24")]
    assert why["entries"][1]["ports"] == ["443/tcp"] and why["entries"][0]["since"]
    other = api.get("/api/v1/addresses/198.51.100.99").get_json()
    assert [e["entry_id"] for e in other["entries"]] == [net["id"]]
    nothing = api.get("/api/v1/addresses/203.0.113.5").get_json()
    assert nothing["allowed"] is False and nothing["entries"] == []
    assert api.get("/api/v1/addresses/10.1.2.3").get_json()["internal"] == ["10.0.0.0/8"]
    bad = api.get("/api/v1/addresses/not-an-ip")
    assert bad.status_code == 400 and "not-an-ip" in bad.get_json()["error"]["message"]


def test_two_entries_share_an_address_and_deleting_one_keeps_it_published(api, app):
    from server_app.services import changelog
    a = api.post("/api/v1/entries", json={"target": "198.51.100.10"}).get_json()
    b = api.post("/api/v1/entries", json={"target": "198.51.100.10/31"}).get_json()
    c = api.post("/api/v1/entries", json={"target": "198.51.100.10", "ports": ["443/tcp"]}).get_json()
    assert b["revision"] == 2 and c["revision"] == 3
    with app.app_context():
        assert changelog.published() == {"198.51.100.10/32", "198.51.100.10/31", "198.51.100.10/32 443/tcp"}
    api.delete("/api/v1/entries/%d" % a["id"])
    with app.app_context():
        assert changelog.published() == {"198.51.100.10/31", "198.51.100.10/32 443/tcp"}
    # A second entry with the very same element: deleting one publishes nothing new.
    d = api.post("/api/v1/entries", json={"target": "198.51.100.10/31", "comment": "x", "ports": []})
    assert d.status_code == 409


def test_import_skips_existing_entries_without_a_new_revision(api, app):
    from server_app.services import changelog
    first = api.post("/api/v1/entries", json={"target": "198.51.100.0/24"}).get_json()
    imported = api.post("/api/v1/entries/import?on_duplicate=skip",
                        json={"entries": [{"target": "198.51.100.0/24"}]}).get_json()
    assert imported["created"] == [] and imported["skipped"][0]["id"] == first["id"]
    with app.app_context():
        revision = changelog.head_revision()
    assert revision == 1


def test_audit_log_records_who_what_when_from_where_before_and_after(api):
    entry = api.post("/api/v1/entries", token="editor", json={"target": "198.51.100.10"}).get_json()
    api.delete("/api/v1/entries/%d" % entry["id"], token="editor")
    api.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    events = [e for e in api.get("/api/v1/audit").get_json()["items"] if e["actor_kind"] != "system"]
    assert [e["action"] for e in events] == ["token.create", "entry.delete", "entry.create"]
    delete, create = events[1], events[2]
    assert create["actor"] == "editor-test" and create["actor_kind"] == "token"
    assert create["remote_addr"] == "127.0.0.1" and create["revision"] == 1
    assert create["before"] is None and create["after"]["target"] == "198.51.100.10"
    assert delete["before"]["id"] == entry["id"] and delete["after"] is None and delete["revision"] == 2
    assert [e["action"] for e in api.get("/api/v1/audit?action=entry.create").get_json()["items"]] == ["entry.create"]
    assert api.get("/api/v1/audit?actor=admin-test").get_json()["total"] == 1
    assert api.get("/api/v1/audit?object_type=entry&object_id=%d" % entry["id"]).get_json()["total"] == 2
    assert api.get("/api/v1/audit?q=198.51.100").get_json()["total"] == 2
    assert api.get("/api/v1/audit?since=2000-01-01T00:00:00Z").get_json()["total"] == 3 + 4   # + fixture tokens
    assert api.get("/api/v1/audit?until=2000-01-01T00:00:00Z").get_json()["total"] == 0
    bad = api.get("/api/v1/audit?since=yesterday")
    assert bad.status_code == 400 and "yesterday" in bad.get_json()["error"]["message"]


def test_the_audit_log_has_no_write_endpoint(api):
    assert api.client.delete("/api/v1/audit", headers={"Authorization": "Bearer " + api.secrets["admin"]}) \
        .status_code == 405


def test_tokens_are_shown_once_hashed_revocable_with_last_use(api, app):
    created = api.post("/api/v1/tokens", json={"name": "automation", "role": "editor"})
    assert created.status_code == 201
    secret = created.get_json()["token"]
    listed = api.get("/api/v1/tokens").get_json()["items"]
    mine = [t for t in listed if t["name"] == "automation"][0]
    assert "token" not in mine and mine["last_used"] is None
    assert api.call("POST", "/api/v1/entries", token=secret, json={"target": "198.51.100.10"}).status_code == 201
    mine = [t for t in api.get("/api/v1/tokens").get_json()["items"] if t["name"] == "automation"][0]
    assert mine["last_used"] is not None
    with app.app_context():
        from server_app.models import Token, db
        stored = db.session.query(Token).filter_by(name="automation").one()
        assert secret not in (stored.token_hash, stored.name) and len(stored.token_hash) == 64
    assert api.delete("/api/v1/tokens/%d" % mine["id"]).status_code == 204
    assert api.call("GET", "/api/v1/entries", token=secret).status_code == 401
    assert api.delete("/api/v1/tokens/99999").status_code == 404
    assert api.post("/api/v1/tokens", json={"name": "automation", "role": "viewer"}).status_code == 409
    bad = api.post("/api/v1/tokens", json={"name": "x", "role": "root"})
    assert bad.status_code == 400 and "'root'" in bad.get_json()["error"]["message"]
    assert api.post("/api/v1/tokens", json={"name": "", "role": "viewer"}).status_code == 400


def test_import_json_and_csv_all_or_nothing_with_one_revision(api):
    body = {"entries": [{"target": "198.51.100.10"}, {"target": "198.51.100.0/28", "ports": ["443/tcp"]},
                        {"target": "partner.example.com", "comment": "SaaS"}]}
    result = api.post("/api/v1/entries/import", json=body)
    assert result.status_code == 201
    assert len(result.get_json()["created"]) == 3 and result.get_json()["revision"] == 1
    bad = api.post("/api/v1/entries/import", json={"entries": [{"target": "203.0.113.1"}, {"target": "10.0.0.1"},
                                                               {"target": "nonsense value"}]})
    assert bad.status_code == 400
    message = bad.get_json()["error"]["message"]
    assert "nothing was imported" in message and "item 2" in message and "item 3" in message
    assert api.get("/api/v1/entries").get_json()["total"] == 3
    dup = api.post("/api/v1/entries/import?on_duplicate=error", json={"entries": [{"target": "198.51.100.10"}]})
    assert dup.status_code == 400 and "exists already" in dup.get_json()["error"]["message"]
    csv_text = "target,ports,deletable,comment\n203.0.113.7,443/tcp 80/tcp,false,from firewall\n203.0.113.8,,,\n"
    result = api.post("/api/v1/entries/import", data=csv_text, headers={"Content-Type": "text/csv"})
    assert result.status_code == 201 and len(result.get_json()["created"]) == 2
    entry = api.get("/api/v1/entries?q=203.0.113.7").get_json()["items"][0]
    assert entry["ports"] == ["443/tcp", "80/tcp"] and entry["deletable"] is False
    no_header = api.post("/api/v1/entries/import", data="203.0.113.9\n", headers={"Content-Type": "text/csv"})
    assert no_header.status_code == 400 and "header" in no_header.get_json()["error"]["message"]


def test_export_round_trips_through_import(api, app, tmp_path):
    api.post("/api/v1/entries", json={"target": "198.51.100.10", "ports": ["443/tcp"], "comment": "a, \"b\""})
    api.post("/api/v1/entries", json={"target": "example.org", "deletable": False})
    as_json = api.get("/api/v1/entries/export").get_json()["entries"]
    as_csv = api.get("/api/v1/entries/export?format=csv")
    assert as_csv.mimetype == "text/csv"
    assert api.get("/api/v1/entries/export?format=xml").status_code == 400

    from server_app import create_app, init_db
    from server_app.services import tokens
    other = create_app(config={"data_dir": str(tmp_path / "b"), "secret_key": "s" * 32,
                               "database_url": "sqlite:///%s" % (tmp_path / "b.db")})
    init_db(other)
    with other.app_context():
        secret = tokens.create("admin", "admin-test")[1]
    api2 = type(api)(other, {"admin": secret})   # the conftest's Api class, whichever conftest is imported

    assert api2.post("/api/v1/entries/import", data=as_csv.get_data(as_text=True),
                     headers={"Content-Type": "text/csv"}).status_code == 201
    again = api2.get("/api/v1/entries/export").get_json()["entries"]
    keep = ("target", "kind", "ports", "deletable", "comment", "expires_at")
    assert [{k: e[k] for k in keep} for e in again] == [{k: e[k] for k in keep} for e in as_json]


def test_expired_entries_are_removed_and_recorded(api, app):
    from server_app.models import Entry, db
    from server_app.services import changelog, entries
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    entry = api.post("/api/v1/entries", json={"target": "198.51.100.10", "expires_at": soon,
                                              "deletable": False}).get_json()
    with app.app_context():
        assert entries.expire() == []
        later = db.session.get(Entry, entry["id"]).expires_at + dt.timedelta(seconds=1)
        assert entries.expire(now=later) == [2]
        assert changelog.published() == set()
    events = api.get("/api/v1/audit?action=entry.expire").get_json()["items"]
    assert events[0]["actor"] == "system" and events[0]["revision"] == 2


def test_gateways_list_is_empty_before_any_gateway(api):
    assert api.get("/api/v1/gateways").get_json() == {"revision": 0, "items": []}


def test_the_api_names_per_entry_and_per_gateway_what_a_gateway_does_not_enforce(api, app):
    v6 = api.post("/api/v1/entries", json={"target": "2001:db8::1", "ports": ["443/tcp"]}).get_json()
    v4 = api.post("/api/v1/entries", json={"target": "198.51.100.10"}).get_json()
    with app.app_context():
        # What the agents said in their hello (tests/server/test_protocol.py drives the real exchange).
        db.session.add_all([
            Gateway(name="gw1", applied_revision=2, digest_match=True, holds=json.dumps(
                {"families": [4], "internal_networks": ["10.0.0.0/8"]})),
            Gateway(name="gw2", applied_revision=2, digest_match=True, holds=json.dumps(
                {"families": [4, 6], "internal_networks": ["198.51.100.0/24"]})),
            Gateway(name="gw3", applied_revision=1, digest_match=True)])    # an agent from before holds
        db.session.commit()
    off = {"gateway": "gw1", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}
    inside = {"gateway": "gw2", "reason": "internal", "message": "inside this gateway's internal networks"}
    assert api.get("/api/v1/entries/%d" % v6["id"]).get_json()["elements"] == [
        {"element": "2001:db8::1/128 443/tcp", "not_enforced": [off]}]
    assert api.get("/api/v1/entries/%d" % v4["id"]).get_json()["elements"] == [
        {"element": "198.51.100.10/32", "not_enforced": [inside]}]
    assert [i["not_enforced"] for i in api.get("/api/v1/addresses/2001:db8::1").get_json()["entries"]] == [[off]]
    items = {g["name"]: g for g in api.get("/api/v1/gateways").get_json()["items"]}
    assert {n: (g["in_sync"], g["status"], g["families"]) for n, g in items.items()} == {
        "gw1": (True, "in sync; not enforced: 1 skipped: no IPv6", [4]),
        "gw2": (True, "in sync; not enforced: 1 refused by its own policy (internal networks)", [4, 6]),
        "gw3": (False, "behind: at revision 1 of 2", None)}
    assert items["gw1"]["not_enforced"] == {"count": 1, "reasons": ["IPv6 off"], "elements": [
        {"element": "2001:db8::1/128 443/tcp", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}]}
    assert items["gw1"]["differences"] == [{"kind": "skipped", "reason": "no_ipv6", "label": "skipped: no IPv6",
                                            "count": 1, "elements": [{"element": "2001:db8::1/128 443/tcp",
                                                                      "message": "IPv6 is off on this gateway"}]}]
    assert items["gw2"]["differences"] == [{"kind": "refused", "reason": "internal",
                                            "label": "refused by its own policy", "count": 1, "elements": [{
                                                "element": "198.51.100.10/32",
                                                "message": "inside this gateway's internal networks"}]}]
    assert items["gw3"]["not_enforced"] is None and items["gw3"]["differences"] == []


def test_the_fleet_names_what_a_gateway_kernel_lacks_and_holds_beyond_it(api, app):
    """What the agent's last ack said (og_protocol.FEATURE_DIFFERS; the real exchange is in
    tests/agent/test_agent_protocol.py and tests/server/test_protocol.py) becomes missing and extra."""
    for target in ("198.51.100.10", "198.51.100.11", "2001:db8::1"):
        api.post("/api/v1/entries", json={"target": target})
    v4_only = json.dumps({"families": [4], "internal_networks": ["10.0.0.0/8"]})
    with app.app_context():
        db.session.add_all([
            Gateway(name="gw1", applied_revision=3, digest_match=False, elements=2, holds=v4_only,
                    kernel_diff=json.dumps({"missing": ["198.51.100.11/32"], "missing_count": 1,
                                            "extra": ["203.0.113.99/32"], "extra_count": 1})),
            Gateway(name="gw2", applied_revision=3, digest_match=False, elements=1, holds=v4_only,
                    kernel_diff=json.dumps({"missing": [], "missing_count": 0, "extra": [], "extra_count": 0})),
            Gateway(name="gw3", applied_revision=3, digest_match=False, elements=2),   # an old agent: no holds
            # In sync: a difference its agent reported before is over (the digest matches now).
            Gateway(name="gw4", applied_revision=3, digest_match=True, elements=2, holds=v4_only,
                    kernel_diff=json.dumps({"missing": ["198.51.100.11/32"], "missing_count": 1, "extra": [],
                                            "extra_count": 0}))])
        db.session.commit()
    items = {g["name"]: g for g in api.get("/api/v1/gateways").get_json()["items"]}
    assert items["gw1"]["status"] == "differs at revision 3: 1 missing from its kernel, 1 extra in its kernel"
    assert [(d["kind"], d["count"], d["elements"]) for d in items["gw1"]["differences"]] == [
        ("skipped", 1, [{"element": "2001:db8::1/128", "message": "IPv6 is off on this gateway"}]),
        ("missing", 1, [{"element": "198.51.100.11/32",
                         "message": "applied by its agent, but not in the kernel's sets"}]),
        ("extra", 1, [{"element": "203.0.113.99/32", "message": "in the kernel's sets, but not what its agent "
                                                                "applied"}])]
    assert items["gw1"]["counts"] == {"holds": 2, "expected": 2}
    assert items["gw2"]["status"] == ("differs at revision 3: its kernel holds what its agent applied (1 elements, "
                                      "2 expected), but that is not the published set; a snapshot is sent")
    assert items["gw3"]["status"] == ("differs: its kernel does not hold what it should at revision 3 (2 elements, "
                                      "3 expected; its agent did not say what it holds, so what its policy refuses "
                                      "counts as missing)")
    assert (items["gw4"]["status"], items["gw4"]["counts"]) == ("in sync; not enforced: 1 skipped: no IPv6", None)
    assert [d["kind"] for d in items["gw4"]["differences"]] == ["skipped"]


def test_health_ready_and_metrics(api):
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").get_json()["status"] == "ready"
    api.post("/api/v1/entries", json={"target": "198.51.100.10"})
    text = api.client.get("/metrics").get_data(as_text=True)
    assert 'og_server_entries{kind="ip"} 1.0' in text and "og_server_revision 1.0" in text
    assert "og_server_publish_latency_seconds_bucket" in text


def test_unknown_paths_and_methods_answer_json(api):
    response = api.client.get("/api/v1/nothing-here")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = api.client.put("/api/v1/entries")
    assert response.status_code == 405 and "error" in response.get_json()


def test_unknown_query_parameters_are_refused_by_name(api):
    response = api.get("/api/v1/entries?kindd=ip")
    assert response.status_code == 400
    assert "'kindd'" in response.get_json()["error"]["message"] and "kind" in response.get_json()["error"]["message"]


def test_a_405_keeps_its_allow_header(api):
    response = api.client.put("/api/v1/entries/1", headers={"Authorization": "Bearer " + api.secrets["admin"]})
    assert response.status_code == 405 and "DELETE" in response.headers["Allow"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/entries/%d"), ("DELETE", "/api/v1/entries/%d"), ("GET", "/api/v1/entries/%d/traffic"),
    ("DELETE", "/api/v1/tokens/%d")])
def test_an_id_beyond_32_bits_is_a_404_for_every_method_not_a_500_or_405(api, method, path):
    # Ids are INTEGER columns (32-bit in PostgreSQL and MariaDB): one past the largest names nothing, and the
    # database driver would fail on it.
    largest = (1 << 31) - 1
    answered = api.call(method, path % (largest + 1))
    assert (answered.status_code, answered.get_json()["error"]["code"]) == (404, "not_found")
    assert api.call(method, path % largest).status_code == 404   # the largest id still reaches the view


def test_a_csv_import_that_cannot_be_read_is_a_400_naming_the_problem(api):
    # A field past the csv module's limit (131,072 characters) is one thing the reader itself refuses.
    answered = api.post("/api/v1/entries/import", data="target,comment\n198.51.100.1,%s\n" % ("x" * 200000),
                        headers={"Content-Type": "text/csv"})
    assert answered.status_code == 400
    assert answered.get_json()["error"]["code"] == "invalid_csv"
    assert answered.get_json()["error"]["message"].startswith("the CSV cannot be read (")
