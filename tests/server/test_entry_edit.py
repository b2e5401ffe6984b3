"""PATCH /api/v1/entries/{id}: an entry changed in place, on SQLite, PostgreSQL and MariaDB (the app fixture).

Merge-patch semantics (RFC 7396), the creation's validation, roles, one-way deletability, If-Match/ETag, a
revision only when the published elements change, the audit event's before and after, and edits racing edits
and deletes from two threads."""

import json
import threading

import pytest
from sqlalchemy import select

from server_app.extensions import db
from server_app.models import AuditEvent, EntryElement
from server_app.services import changelog


def _patch(api, entry_id, body, token="admin", **headers):
    return api.call("PATCH", "/api/v1/entries/%d" % entry_id, token=token, headers=headers,
                    data=json.dumps(body), content_type="application/merge-patch+json")


def _create(api, **fields):
    response = api.post("/api/v1/entries", json=fields)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _state(app, entry_id=None):
    """(head revision, published set, the entry's entry_elements, entry.update events of the entry that were done;
    refused ones are audited too, with their reason: _refusals)."""
    with app.app_context():
        rows = set(db.session.execute(select(EntryElement.element).where(EntryElement.entry_id == entry_id))
                   .scalars()) if entry_id else set()
        events = db.session.execute(select(AuditEvent).where(AuditEvent.action == "entry.update",
                                                             AuditEvent.object_id == str(entry_id),
                                                             AuditEvent.outcome == "done")
                                    .order_by(AuditEvent.id)).scalars().all()
        events = [(e.before, e.after, e.revision, e.summary) for e in events]
        result = changelog.head_revision(), changelog.published(), rows, events
        db.session.remove()
        return result


def _refusals(app):
    """(action, reason) of every refused action audited."""
    with app.app_context():
        rows = db.session.execute(select(AuditEvent.action, AuditEvent.reason).where(AuditEvent.outcome == "refused")
                                  .order_by(AuditEvent.id)).all()
        db.session.remove()
        return [tuple(r) for r in rows]


def test_a_comment_changes_in_place_without_a_revision_and_the_audit_keeps_before_and_after(api, app):
    entry = _create(api, target="198.51.100.10", ports=["80/tcp"], comment="ticket 1")
    head, published, _rows, _events = _state(app)
    answer = _patch(api, entry["id"], {"comment": "ticket 2"}, token="editor")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["id"], body["comment"], body["revision"], body["ports"]) == (entry["id"], "ticket 2", None,
                                                                              ["80/tcp"])
    assert answer.headers["ETag"] == api.get("/api/v1/entries/%d" % entry["id"]).headers["ETag"]
    head_after, published_after, _rows, events = _state(app, entry["id"])
    assert (head_after, published_after) == (head, published)       # nothing the gateways enforce changed
    [(before, after, revision, summary)] = events
    assert (before["comment"], after["comment"], revision) == ("ticket 1", "ticket 2", None)
    assert summary == "changed comment of 198.51.100.10 (80/tcp)"
    audit = api.get("/api/v1/audit?action=entry.update&object_id=%d" % entry["id"]).get_json()["items"]
    assert [(e["before"]["comment"], e["after"]["comment"], e["actor"]) for e in audit] == [
        ("ticket 1", "ticket 2", "editor-test")]


def test_widening_ports_is_one_revision_that_adds_the_new_elements_and_keeps_the_old(api, app):
    entry = _create(api, target="198.51.100.10", ports=["80/tcp"])
    head, published, rows, _events = _state(app, entry["id"])
    assert rows == {"198.51.100.10/32 80/tcp"}
    answer = _patch(api, entry["id"], {"ports": ["8443/tcp", "80/tcp"], "comment": "and the admin port"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["ports"] == ["80/tcp", "8443/tcp"] and body["revision"] == head + 1
    head_after, published_after, rows, events = _state(app, entry["id"])
    assert head_after == head + 1
    assert rows == {"198.51.100.10/32 80/tcp", "198.51.100.10/32 8443/tcp"} and published_after == published | rows
    with app.app_context():
        assert changelog.delta(head, head_after)[:2] == (["198.51.100.10/32 8443/tcp"], [])   # nothing removed
        db.session.remove()
    [(before, after, revision, summary)] = events
    assert (before["ports"], after["ports"], revision) == (["80/tcp"], ["80/tcp", "8443/tcp"], head + 1)
    assert summary == "changed comment, ports of 198.51.100.10 (80/tcp, 8443/tcp)"
    # narrowed back: the element goes again; null (or []) means every port, as a creation without ports
    assert _patch(api, entry["id"], {"ports": ["80/tcp"]}).get_json()["revision"] == head + 2
    assert _patch(api, entry["id"], {"ports": None}).get_json()["ports"] == []
    assert _state(app, entry["id"])[2] == {"198.51.100.10/32"}


def test_expiry_grace_and_null_resets_are_no_revision(api, app):
    domain = _create(api, target="api.example.com", comment="x")
    head = _state(app)[0]
    body = _patch(api, domain["id"], {"expires_at": "2099-01-01T10:00:00+02:00", "grace_seconds": 60}).get_json()
    assert (body["expires_at"], body["grace_seconds"], body["revision"]) == ("2099-01-01T08:00:00Z", 60, None)
    body = _patch(api, domain["id"], {"expires_at": None, "grace_seconds": None, "comment": None}).get_json()
    assert (body["expires_at"], body["grace_seconds"], body["comment"]) == (None, None, "")
    assert _state(app)[0] == head
    assert len(_state(app, domain["id"])[3]) == 2
    # the same values again: 200, nothing recorded
    assert _patch(api, domain["id"], {"comment": ""}).status_code == 200
    assert len(_state(app, domain["id"])[3]) == 2


@pytest.mark.parametrize("body, status, code, words", [
    ({"target": "198.51.100.11"}, 400, "read_only_field", "target cannot be changed"),
    ({"id": 7, "comment": "x"}, 400, "read_only_field", "id cannot be changed"),
    ({"created_by": "me"}, 400, "read_only_field", "created_by"),
    ({"colour": "red"}, 400, "unknown_field", "colour"),
    ({"ports": ["80/xyz"]}, 400, "invalid_ports", "80/xyz"),
    ({"ports": "80/tcp"}, 400, "invalid_ports", "list of strings"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, 400, "invalid_expires_at", "in the past"),
    ({"expires_at": "soon"}, 400, "invalid_expires_at", "'soon'"),
    ({"comment": "x" * 2001}, 400, "invalid_comment", "2000"),
    ({"grace_seconds": 60}, 400, "invalid_grace_seconds", "domain entries only"),
    ({"deletable": None}, 400, "invalid_deletable", "null"),
    ({"deletable": "no"}, 400, "invalid_deletable", "\"no\""),
    (["comment"], 400, "invalid_body", "merge patch"),
])
def test_bad_patches_are_refused_naming_the_field_and_change_nothing(api, app, body, status, code, words):
    entry = _create(api, target="198.51.100.10", ports=["80/tcp"], comment="keep")
    before = api.get("/api/v1/entries/%d" % entry["id"])
    answer = _patch(api, entry["id"], body)
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)
    assert words in answer.get_json()["error"]["message"]
    after = api.get("/api/v1/entries/%d" % entry["id"])
    assert after.get_json() == before.get_json() and after.headers["ETag"] == before.headers["ETag"]
    assert _state(app, entry["id"])[3] == []
    refusals = _refusals(app)                    # the refusal itself is audited, with its reason
    assert len(refusals) == 1 and words in refusals[0][1], refusals


def test_a_body_that_is_not_a_json_merge_patch_is_refused(api):
    entry = _create(api, target="198.51.100.10")
    path = "/api/v1/entries/%d" % entry["id"]
    answer = api.call("PATCH", path, data="comment=x", content_type="application/x-www-form-urlencoded")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (415, "unsupported_media_type")
    answer = api.call("PATCH", path, data="{not json", content_type="application/json")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (400, "invalid_json")
    assert api.call("PATCH", path, json={"comment": "plain JSON too"}).get_json()["comment"] == "plain JSON too"


def test_a_missing_entry_is_a_404_and_ports_taken_by_another_entry_a_409(api):
    assert _patch(api, 999, {"comment": "x"}).get_json()["error"]["code"] == "not_found"
    web = _create(api, target="198.51.100.10", ports=["80/tcp"])
    tls = _create(api, target="198.51.100.10", ports=["443/tcp"])
    answer = _patch(api, tls["id"], {"ports": ["80/tcp"]})
    assert answer.status_code == 409 and "id %d" % web["id"] in answer.get_json()["error"]["message"]
    assert api.get("/api/v1/entries/%d" % tls["id"]).get_json()["ports"] == ["443/tcp"]


def test_roles_and_one_way_deletability(api, app):
    entry = _create(api, target="198.51.100.10", ports=["80/tcp"])
    assert _patch(api, entry["id"], {"comment": "x"}, token="viewer").status_code == 403
    assert _patch(api, entry["id"], {"comment": "x"}, token="gateway").status_code == 403
    refused = _patch(api, entry["id"], {"deletable": False}, token="editor")
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (403, "forbidden")
    assert "only an admin" in refused.get_json()["error"]["message"]
    assert _patch(api, entry["id"], {"deletable": True}, token="editor").status_code == 200   # unchanged: no-op
    assert _patch(api, entry["id"], {"deletable": False}, token="admin").get_json()["deletable"] is False
    for token in ("admin", "editor"):
        back = _patch(api, entry["id"], {"deletable": True}, token=token)
        assert (back.status_code, back.get_json()["error"]["code"]) == (403, "undeletable")
        assert "never becomes deletable" in back.get_json()["error"]["message"]
    # an undeletable entry: an editor may change its comment, not what it allows or how long
    assert _patch(api, entry["id"], {"comment": "kept"}, token="editor").status_code == 200
    for change in ({"ports": ["80/tcp", "443/tcp"]}, {"expires_at": "2099-01-01T00:00:00Z"}):
        refused = _patch(api, entry["id"], change, token="editor")
        assert (refused.status_code, refused.get_json()["error"]["code"]) == (403, "undeletable")
        assert _patch(api, entry["id"], change, token="admin").status_code == 200
    final = api.get("/api/v1/entries/%d" % entry["id"]).get_json()
    assert (final["deletable"], final["comment"], final["ports"]) == (False, "kept", ["443/tcp", "80/tcp"])
    assert [e[1]["deletable"] for e in _state(app, entry["id"])[3]] == [False, False, False, False]


def test_if_match_refuses_a_stale_etag_and_star_matches_any(api, app):
    entry = _create(api, target="198.51.100.10")
    etag = api.get("/api/v1/entries/%d" % entry["id"]).headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    first = _patch(api, entry["id"], {"comment": "first"}, **{"If-Match": etag})
    assert first.status_code == 200 and first.headers["ETag"] != etag
    stale = _patch(api, entry["id"], {"comment": "second"}, **{"If-Match": etag})
    assert (stale.status_code, stale.get_json()["error"]["code"]) == (412, "precondition_failed")
    assert first.headers["ETag"] in stale.get_json()["error"]["message"]
    weak = _patch(api, entry["id"], {"comment": "weak"}, **{"If-Match": "W/" + first.headers["ETag"]})
    assert weak.status_code == 412          # If-Match compares strongly (RFC 9110)
    listed = _patch(api, entry["id"], {"comment": "listed"}, **{"If-Match": '"x", ' + first.headers["ETag"]})
    assert listed.status_code == 200
    assert _patch(api, entry["id"], {"comment": "any"}, **{"If-Match": "*"}).status_code == 200
    assert api.get("/api/v1/entries/%d" % entry["id"]).get_json()["comment"] == "any"
    assert [e[1]["comment"] for e in _state(app, entry["id"])[3]] == ["first", "listed", "any"]
    # without If-Match the last write wins
    assert _patch(api, entry["id"], {"comment": "last"}).status_code == 200


def _together(*calls):
    """Run the calls in threads released at once; their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_concurrent_edits_of_the_same_read_one_wins_one_is_412(api, app):
    entry = _create(api, target="198.51.100.10", ports=["80/tcp"])
    for attempt in range(3):
        etag = api.get("/api/v1/entries/%d" % entry["id"]).headers["ETag"]

        def edit(comment, ports):
            return lambda: _patch(api, entry["id"], {"comment": comment, "ports": ports}, **{"If-Match": etag})

        one, two = _together(edit("one %d" % attempt, ["80/tcp", "8443/tcp"]), edit("two %d" % attempt, ["80/tcp"]))
        assert sorted([one.status_code, two.status_code]) == [200, 412], (one.get_json(), two.get_json())
        winner = one if one.status_code == 200 else two
        final = api.get("/api/v1/entries/%d" % entry["id"])
        assert final.get_json()["comment"] == winner.get_json()["comment"]
        assert final.headers["ETag"] == winner.headers["ETag"]
        assert _state(app, entry["id"])[2] == {"198.51.100.10/32 " + p for p in final.get_json()["ports"]}
    assert len(_state(app, entry["id"])[3]) == 3      # one audit event per winner, none for a 412


def test_an_edit_racing_a_delete_is_applied_whole_or_404_never_half(api, app):
    for attempt in range(4):
        entry = _create(api, target="198.51.100.%d" % (20 + attempt), ports=["80/tcp"])
        patched, deleted = _together(
            lambda: _patch(api, entry["id"], {"ports": ["80/tcp", "8443/tcp"], "comment": "widened"}),
            lambda: api.delete("/api/v1/entries/%d" % entry["id"]))
        assert deleted.status_code == 204
        assert patched.status_code in (200, 404), patched.get_json()
        assert api.get("/api/v1/entries/%d" % entry["id"]).status_code == 404
        head, published, rows, _events = _state(app, entry["id"])
        assert rows == set() and not {e for e in published if e.startswith("198.51.100.%d/32" % (20 + attempt))}
        with app.app_context():
            # the change log replayed from nothing gives the published set: no element was left behind
            assert set(changelog.delta(0, head)[0]) == published
            db.session.remove()
