"""The server's seams (docs/architecture.md): one error shape for every request error, the services (not the
views) waking the hub after a change, and the background threads started and stopped together."""

import datetime as dt
import logging

import pytest
from sqlalchemy import text

from server_app.extensions import db
from server_app.models import Entry, Gateway, utcnow
from server_app.services import changelog, entries, gateways
from server_app.services import hub as hub_module
from server_app.services.hub import Hub


@pytest.mark.parametrize("path, kwargs, status, code, message", [
    ("/api/v1/entries?page=x", {}, 400, "invalid_page",
     "page and per_page must be whole numbers, not 'x' and None"),
    ("/api/v1/entries?per_page=501", {}, 400, "invalid_page",
     "page must lie within 1-1000000000 and per_page within 1-500"),
    ("/api/v1/audit?since=yesterday", {}, 400, "invalid_time",
     "since=yesterday is not an ISO 8601 time such as 2026-11-23T10:00:00Z"),
    ("/api/v1/traffic?window=2y", {}, 400, "invalid_window", None),
    ("/api/v1/entries", {"method": "POST", "data": "x", "headers": {"Content-Type": "text/plain"}}, 400,
     "invalid_json", "the body must be JSON with Content-Type: application/json"),
    ("/api/v1/entries/import", {"method": "POST", "data": "", "headers": {"Content-Type": "text/csv"}}, 400,
     "invalid_csv", "the CSV needs a header line with at least a target column "
     "(target,ports,deletable,expires_at,comment)"),
    ("/api/v1/entries/import", {"method": "POST", "json": {"items": []}}, 400, "invalid_body",
     "the body must be {\"entries\": [...]} (as GET /api/v1/entries/export gives it), or CSV with Content-Type: "
     "text/csv"),
    ("/api/v1/entries/999", {"method": "DELETE"}, 404, "not_found", "entry 999 does not exist"),
])
def test_every_request_error_answers_the_one_error_shape(api, path, kwargs, status, code, message):
    kwargs = dict(kwargs)
    response = api.call(kwargs.pop("method", "GET"), path, **kwargs)
    body = response.get_json()
    assert (response.status_code, sorted(body), sorted(body["error"]), body["error"]["code"]) == (
        status, ["error"], ["code", "message"], code)
    if message is not None:
        assert body["error"]["message"] == message


def test_the_same_error_is_a_page_on_the_uis_paths_and_the_shape_on_the_apis(app):
    client = app.test_client()
    page = client.get("/no-such-page")
    assert (page.status_code, page.mimetype, "<title>Not Found" in page.text) == (404, "text/html", True)
    answer = client.get("/api/v1/no-such-path")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (404, "not_found")


class CountingHub(Hub):
    """The real hub, recording the revisions the services announce to it (its thread is not started)."""

    def __init__(self, app):
        super().__init__(app)
        self.announced = []

    def announce(self, head, forward_only=True):
        self.announced.append(head)
        super().announce(head, forward_only)


@pytest.fixture
def hub(app):
    counting = app.extensions["og_hub"] = CountingHub(app)
    return counting


def test_each_change_of_the_entries_service_announces_its_revision_to_the_hub(app, hub):
    with app.app_context():
        entry, revision = entries.create({"target": "198.51.100.30"}, app.config["OG"], "test")
        assert (revision, hub.announced, hub.revision) == (1, [1], 1)
        entries.import_entries([{"target": "198.51.100.31"}], app.config["OG"], "test")
        assert (hub.announced, hub.revision) == ([1, 2], 2)
        assert entries.delete(entry.id) == 3
        assert (hub.announced, hub.revision) == ([1, 2, 3], 3)
        with pytest.raises(entries.EntryError):
            entries.delete(entry.id)
        assert hub.announced == [1, 2, 3]      # a refused change announces nothing
        db.session.remove()


def test_the_views_leave_announcing_to_the_services(api, hub):
    created = api.post("/api/v1/entries", json={"target": "198.51.100.10"}).get_json()
    assert hub.announced == [created["revision"]] == [1]
    items = [{"target": "198.51.100.11"}, {"target": "203.0.113.0/24"}]
    imported = api.post("/api/v1/entries/import", json={"entries": items}).get_json()
    assert (len(imported["created"]), hub.announced) == (2, [1, 2])
    assert api.delete("/api/v1/entries/%d" % created["id"]).status_code == 204
    assert hub.announced == [1, 2, 3]
    assert api.post("/api/v1/entries", json={"target": "198.51.100.11"}).status_code == 409
    assert hub.announced == [1, 2, 3]


def test_a_local_commit_never_moves_the_hubs_revision_back(app, hub):
    with app.app_context():
        hub_module.wake(7)
        hub_module.wake(5)      # an older commit whose announcement arrived late
        hub_module.wake(None)   # "poll now" leaves the revision to the poll
    assert (hub.announced, hub.revision) == ([7, 5], 7)


def test_the_housekeeper_expires_entries_and_announces_their_revisions(app, api, hub):
    ids = [api.post("/api/v1/entries", json={"target": t, "expires_at": "2099-01-01T00:00:00Z"}).get_json()["id"]
           for t in ("198.51.100.20", "198.51.100.21", "198.51.100.22")]
    assert hub.announced == [1, 2, 3]
    with app.app_context():
        db.session.query(Entry).filter(Entry.id.in_(ids[:2])).update(
            {"expires_at": utcnow() - dt.timedelta(seconds=1)}, synchronize_session=False)
        db.session.commit()
        housekeeper = app.extensions["og_housekeeper"]
        housekeeper.run_due(now=1e9)
        assert (sorted(changelog.published()), hub.announced) == (["198.51.100.22/32"], [1, 2, 3, 4, 5])
        housekeeper.run_due(now=1e9 + 0.5)    # the next expiry pass is not due yet
        assert hub.announced == [1, 2, 3, 4, 5]
        db.session.remove()


def test_the_background_threads_start_and_stop_together(app):
    background = app.extensions["og_background"]
    hub, housekeeper = app.extensions["og_hub"], app.extensions["og_housekeeper"]
    background.start()
    try:
        assert (hub._thread.is_alive(), housekeeper._thread.is_alive()) == (True, True)
        # The resolver is disabled in these tests: it starts no thread.
        assert app.extensions["og_resolver"]._thread is None
    finally:
        background.stop()
    assert (hub._thread.is_alive(), housekeeper._thread.is_alive()) == (False, False)


def test_a_stale_sessions_state_written_late_never_overwrites_the_newer_sessions_row(app):
    # Two replicas' hubs on one database. The gateway's session moved from replica a to replica b while a's hub
    # still held a batched state of the old session (a flush that failed once, retried later): that late write
    # must leave the newer session's row as b wrote it.
    on_a, on_b = Hub(app), Hub(app)
    with app.app_context():
        old = gateways.open_session("gw-moved", "192.0.2.1", "test", "a")
        on_a.record_gateway("gw-moved", old, applied_revision=125, elements=3, digest="old")
        new = gateways.open_session("gw-moved", "192.0.2.1", "test", "b")
        on_b.record_gateway("gw-moved", new, applied_revision=126, elements=4, digest="new")
        on_b.flush_gateways()
        on_a.flush_gateways()           # the late retry of the old session's state
        db.session.remove()
        row = db.session.query(Gateway).filter_by(name="gw-moved").one()
        assert (row.session_id, row.session_replica, row.applied_revision, row.elements, row.digest) == (
            new, "b", 126, 4, "new")
        # The newer session's own states are still written.
        on_b.record_gateway("gw-moved", new, applied_revision=127)
        on_b.flush_gateways()
        db.session.remove()
        assert db.session.query(Gateway).filter_by(name="gw-moved").one().applied_revision == 127
        db.session.remove()


def test_a_failed_flush_is_logged_once_and_its_states_written_at_the_next_try(app, caplog):
    # A real failure: the gateways table is away (renamed) for two flushes, then back.
    hub = Hub(app)
    caplog.set_level(logging.INFO, logger=hub_module.log.name)
    with app.app_context():
        session = gateways.open_session("gw-kept", "192.0.2.2", "test", "a")
        hub.record_gateway("gw-kept", session, applied_revision=5, elements=1)
        db.session.remove()
        with db.engine.begin() as connection:
            connection.execute(text("ALTER TABLE gateways RENAME TO gateways_away"))
        try:
            hub.flush_gateways()
            hub.record_gateway("gw-kept", session, applied_revision=6)     # newer values win
            hub.flush_gateways()
        finally:
            db.session.remove()
            with db.engine.begin() as connection:
                connection.execute(text("ALTER TABLE gateways_away RENAME TO gateways"))
        assert [r.levelname for r in caplog.records if r.name == hub_module.log.name] == ["WARNING"]
        hub.flush_gateways()
        db.session.remove()
        row = db.session.query(Gateway).filter_by(name="gw-kept").one()
        assert (row.applied_revision, row.elements) == (6, 1)
        assert [r.getMessage() for r in caplog.records if r.name == hub_module.log.name][1:] == [
            "gateway states written again"]
        db.session.remove()
