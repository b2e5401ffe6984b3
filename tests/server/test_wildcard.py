"""Wildcard domain entries (*.example.com) through the REST API: create, list, duplicates, refusals, import and
"why is this allowed" for a name. Every answer is validated against the OpenAPI document (conftest.Api).

That the central resolver never asks DNS for a wildcard is shown against a real dnsmasq in test_resolver.py."""

import pytest

from server_app.models import Entry, db


def test_a_wildcard_is_a_domain_entry_marked_wildcard_without_addresses_or_resolution(api, app):
    created = api.post("/api/v1/entries", json={"target": "*.Partner.Example.COM.", "ports": ["443/tcp"]})
    assert created.status_code == 201
    entry = created.get_json()
    assert (entry["target"], entry["kind"], entry["wildcard"]) == ("*.partner.example.com", "domain", True)
    assert entry["addresses"] == [] and entry["resolve_error"] is None and entry["resolved_at"] is None
    with app.app_context():
        assert db.session.get(Entry, entry["id"]).next_resolve_at is None   # never due for the resolver
    exact = api.post("/api/v1/entries", json={"target": "partner.example.com"}).get_json()
    assert exact["wildcard"] is False and exact["kind"] == "domain"
    listed = api.get("/api/v1/entries?kind=domain").get_json()
    assert {(i["target"], i["wildcard"]) for i in listed["items"]} == {
        ("*.partner.example.com", True), ("partner.example.com", False)}
    assert api.get("/api/v1/entries/%d" % entry["id"]).get_json()["wildcard"] is True
    found = api.get("/api/v1/entries?q=*.partner").get_json()
    assert [i["id"] for i in found["items"]] == [entry["id"]]


def test_the_wildcard_and_the_apex_are_different_entries_and_a_repeated_wildcard_is_a_duplicate(api):
    wild = api.post("/api/v1/entries", json={"target": "*.example.com"}).get_json()
    assert api.post("/api/v1/entries", json={"target": "example.com"}).status_code == 201
    dup = api.post("/api/v1/entries", json={"target": "*.EXAMPLE.com."})
    assert dup.status_code == 409
    assert dup.get_json()["error"]["message"] == "an entry for *.example.com exists already: id %d" % wild["id"]
    assert api.post("/api/v1/entries", json={"target": "*.example.com", "ports": ["443/tcp"]}).status_code == 201
    assert api.post("/api/v1/entries", json={"target": "*.api.example.com"}).status_code == 201


@pytest.mark.parametrize("target, words", [
    ("*", "'*' would allow every name; write the star as the whole first label of a name of at least two "
          "labels, e.g. *.example.com"),
    ("*.com", "'*.com' would allow a whole top-level domain; write the star"),
    ("a.*.example.com", "'a.*.example.com': the star is not the first label, or appears more than once; write"),
    ("*x.example.com", "'*x.example.com': the star shares a label with other characters; write"),
    ("**.example.com", "'**.example.com': the star shares a label with other characters; write"),
])
def test_each_refused_wildcard_is_a_400_naming_the_value_and_the_fix(api, target, words):
    answer = api.post("/api/v1/entries", json={"target": target})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_target" and words in error["message"]
    assert api.get("/api/v1/entries").get_json()["total"] == 0


def test_an_import_takes_wildcards_and_refuses_bad_ones_by_item(api):
    bad = api.post("/api/v1/entries/import", json={"entries": [{"target": "*.cdn.example"}, {"target": "*.com"}]})
    assert bad.status_code == 400
    assert "item 2: '*.com' would allow a whole top-level domain" in bad.get_json()["error"]["message"]
    assert api.get("/api/v1/entries").get_json()["total"] == 0
    result = api.post("/api/v1/entries/import", json={"entries": [
        {"target": "*.cdn.example", "ports": ["443/tcp"]}, {"target": "cdn.example"}]})
    assert result.status_code == 201 and len(result.get_json()["created"]) == 2
    items = {i["target"]: i for i in api.get("/api/v1/entries").get_json()["items"]}
    assert items["*.cdn.example"]["wildcard"] is True and items["cdn.example"]["wildcard"] is False
    # An entry as GET gives it (with "wildcard") imports again: as a duplicate here, skipped.
    again = api.post("/api/v1/entries/import", json={"entries": [items["*.cdn.example"]]})
    assert again.status_code == 200 and again.get_json()["skipped"][0]["target"] == "*.cdn.example"
    csv_text = "target,ports\n*.csv.example,443/tcp\n"
    assert api.post("/api/v1/entries/import", data=csv_text, headers={"Content-Type": "text/csv"}).status_code == 201
    assert api.get("/api/v1/entries?q=csv.example").get_json()["items"][0]["wildcard"] is True


def test_why_is_a_name_allowed_shows_the_exact_entry_and_each_wildcard_covering_it(api):
    wild = api.post("/api/v1/entries", json={"target": "*.example.com", "ports": ["443/tcp"]}).get_json()
    deeper = api.post("/api/v1/entries", json={"target": "*.eu.example.com"}).get_json()
    exact = api.post("/api/v1/entries", json={"target": "api.eu.example.com"}).get_json()
    apex = api.post("/api/v1/entries", json={"target": "example.com"}).get_json()
    why = api.get("/api/v1/addresses/API.eu.example.com.").get_json()
    assert why["name"] == "api.eu.example.com" and why["allowed"] is True
    assert [(i["entry_id"], i["match"]) for i in why["entries"]] == [
        (wild["id"], "wildcard"), (deeper["id"], "wildcard"), (exact["id"], "exact")]
    assert why["entries"][0]["ports"] == ["443/tcp"]
    assert why["entries"][0]["resolved_by"] == "the gateways' DNS forwarder"
    one = api.get("/api/v1/addresses/api.example.com").get_json()
    assert [i["target"] for i in one["entries"]] == ["*.example.com"]
    # The apex is matched by its own entry only, never by the wildcard.
    assert [i["entry_id"] for i in api.get("/api/v1/addresses/example.com").get_json()["entries"]] == [apex["id"]]
    none = api.get("/api/v1/addresses/example.org").get_json()
    assert none["allowed"] is False and none["entries"] == []
    bad = api.get("/api/v1/addresses/not-a-name")
    assert bad.status_code == 400 and "'not-a-name' is neither an IP address nor a domain name" in \
        bad.get_json()["error"]["message"]
