"""Schema migrations on a database that holds data: nothing lost, (SQLite) ids never reused afterwards, and the
gateways' session holder added."""

import datetime as dt

import flask_migrate
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from server_app import MIGRATIONS, create_app, init_db, schema_revision
from server_app.models import ClientTraffic, EntryTraffic, UnlistedName, db
from server_app.services import audit, entries, gateways

HEAD = ScriptDirectory(MIGRATIONS).get_current_head()


def _old_entry(target):
    """An address entry with its address and element, as SQL that every revision's schema takes."""
    network = target if "/" in target else target + "/32"
    now = dt.datetime(2026, 12, 3)
    db.session.execute(text("INSERT INTO entries (target, kind, ports, ports_key, deletable, comment, created_by, "
                            "created_at, capped, resolve_error) VALUES (:t, :k, '[]', '', :y, '', 'test', :now, :n, "
                            "'')"), {"t": target, "k": "cidr" if "/" in target else "ip", "y": True, "n": False,
                                     "now": now})
    entry_id = db.session.execute(text("SELECT max(id) FROM entries")).scalar()
    db.session.execute(text("INSERT INTO entry_addresses (entry_id, address, source, first_seen, last_seen, refused) "
                            "VALUES (:e, :a, 'typed', :now, :now, '')"), {"e": entry_id, "a": network, "now": now})
    db.session.execute(text("INSERT INTO entry_elements (entry_id, element) VALUES (:e, :a)"),
                       {"e": entry_id, "a": network})
    db.session.commit()
    return entry_id


def _old_delete(entry_id):
    for table, column in (("entry_elements", "entry_id"), ("entry_addresses", "entry_id"), ("entries", "id")):
        db.session.execute(text("DELETE FROM %s WHERE %s = :e" % (table, column)), {"e": entry_id})
    db.session.commit()


def test_migration_0002_keeps_every_row_and_sqlite_no_longer_reuses_ids(tmp_path):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False})
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0001")
        db.session.execute(text("INSERT INTO log_head (id, revision) VALUES (1, 0)"))
        db.session.commit()
        # Written as SQL: the models have columns later revisions add (0006's entry_addresses.learned_via).
        targets = ("198.51.100.10", "198.51.100.0/28", "203.0.113.7")
        ids = [_old_entry(t) for t in targets]
        _old_delete(ids[-1])              # the newest: at 0001 its id is handed out again ...
        again = _old_entry("203.0.113.9")
        assert again == ids[-1]           # ... as this shows (what 0002 stops)
        _old_delete(again)
        counts = {t: db.session.execute(text("SELECT count(*) FROM %s" % t)).scalar()
                  for t in ("entries", "entry_addresses", "entry_elements", "changes", "audit_events")}
        assert counts["entry_addresses"] == 2 and counts["entry_elements"] == 2
        db.session.remove()
    init_db(app)                          # 0001 -> head, as og-server db upgrade does
    with app.app_context():
        assert schema_revision() == HEAD
        after = {t: db.session.execute(text("SELECT count(*) FROM %s" % t)).scalar() for t in counts}
        assert after == counts            # the rebuilt tables kept their rows, and nothing cascaded away
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        newest = entries.create({"target": "203.0.113.8"}, app.config["OG"], "test")[0].id
        entries.delete(newest)
        assert entries.create({"target": "203.0.113.8"}, app.config["OG"], "test")[0].id == newest + 1
        # Deleting an entry still removes its addresses (the foreign key's cascade survived the rebuild).
        entries.delete(ids[0])
        assert db.session.execute(text("SELECT count(*) FROM entry_addresses WHERE entry_id = :i"),
                                  {"i": ids[0]}).scalar() == 0
        sql = db.session.execute(text("SELECT sql FROM sqlite_master WHERE name = 'entries'")).scalar()
        assert "AUTOINCREMENT" in sql and "uq_entry_target_ports" in sql


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_database(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "og.db")
    return request.getfixturevalue(request.param if request.param == "mariadb" else "postgres").create_database()


def test_migration_0003_adds_entry_traffic_and_keeps_the_samples(tmp_path, any_database):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": any_database})
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0002")
        db.session.execute(text("INSERT INTO traffic_samples (gateway, element, minute, out_bytes, in_bytes, "
                                "out_packets, in_packets) VALUES ('gw1', '198.51.100.10/32', '2026-11-30 10:00:00', "
                                "1, 2, 3, 4)"))
        db.session.commit()
        flask_migrate.upgrade(directory=MIGRATIONS)
        assert schema_revision() == HEAD
        assert db.session.execute(text("SELECT out_bytes, in_bytes FROM traffic_samples")).all() == [(1, 2)]
        minute = dt.datetime(2026, 11, 30, 10, 1)
        for shared in (False, True):
            db.session.add(EntryTraffic(entry_id=7, entry="a.example.com", gateway="gw1", minute=minute,
                                        shared=shared, out_bytes=5, in_bytes=6, out_packets=1, in_packets=1))
        db.session.commit()
        assert db.session.query(EntryTraffic).filter(EntryTraffic.shared.is_(True)).count() == 1
        db.session.add(EntryTraffic(entry_id=7, entry="a.example.com", gateway="gw1", minute=minute, shared=True,
                                    out_bytes=0, in_bytes=0, out_packets=0, in_packets=0))
        with pytest.raises(IntegrityError):
            db.session.commit()       # one row per entry, gateway, minute and sharedness
        db.session.rollback()
        flask_migrate.downgrade(directory=MIGRATIONS, revision="0002")
        assert "entry_traffic" not in inspect(db.engine).get_table_names()
        flask_migrate.upgrade(directory=MIGRATIONS)
        assert "entry_traffic" in inspect(db.engine).get_table_names()


def test_migration_0004_gives_every_known_gateway_an_empty_holds(tmp_path, database_url):
    """Gateways known before 0004 keep their row and are compared with the whole set until they say more."""
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "database_url": database_url,
                      "resolver_enabled": False})
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0003")
        db.session.execute(text("INSERT INTO gateways (name, address, agent_version, connected, applied_revision, "
                                "digest, digest_match, elements) VALUES ('gw1', '10.77.0.1', '0.1.0', false, 7, "
                                "'', true, 3)"))
        db.session.commit()
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        rows = db.session.execute(text("SELECT name, applied_revision, elements, holds FROM gateways")).all()
        assert [tuple(r) for r in rows] == [("gw1", 7, 3, "")]
        if db.engine.dialect.name == "sqlite":
            sql = db.session.execute(text("SELECT sql FROM sqlite_master WHERE name = 'gateways'")).scalar()
            assert "AUTOINCREMENT" in sql       # 0002's rebuild is kept: the column was added in place


def test_migration_0005_adds_the_session_holder_and_keeps_every_gateway(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    columns = "name, connected, applied_revision, digest_match, elements"
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0004")
        db.session.execute(text("INSERT INTO gateways (name, address, agent_version, connected, applied_revision, "
                                "digest, digest_match, elements) VALUES ('gw1', '10.0.0.1', '0.1.0', :t, 7, '', :t, "
                                "3), ('gw2', '', '', :f, 0, '', :f, 0)"), {"t": True, "f": False})
        db.session.commit()
        before = [tuple(r) for r in db.session.execute(text("SELECT %s FROM gateways ORDER BY name" % columns))]
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        rows = db.session.execute(text("SELECT %s, session_replica, session_id FROM gateways ORDER BY name"
                                       % columns)).all()
        assert [tuple(r)[:5] for r in rows] == before
        assert [(r.session_replica, r.session_id) for r in rows] == [("", ""), ("", "")]
        # Rows of sessions from before 0005 have no holder: no replica's start-up touches them.
        assert gateways.release_replica(app.config["OG"]["replica_name"]) == 0
        flask_migrate.downgrade(directory=MIGRATIONS, revision="0004")
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM gateways ORDER BY name" % columns))] \
            == before
        if db.engine.dialect.name == "sqlite":
            sql = db.session.execute(text("SELECT sql FROM sqlite_master WHERE name = 'gateways'")).scalar()
            assert "AUTOINCREMENT" in sql and "session_id" not in sql and "holds" in sql
        db.session.remove()
        db.engine.dispose()


def test_migration_0006_adds_learned_via_and_expiry_and_keeps_every_address(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    columns = "entry_id, address, source, refused"
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0005")
        # Written as SQL: the models already have the columns 0006 adds.
        db.session.execute(text("INSERT INTO entries (target, kind, ports, ports_key, deletable, comment, "
                                "created_by, created_at, capped, resolve_error) VALUES ('a.example.com', 'domain', '[]', '', "
                                ":t, '', 'test', :now, :f, '')"), {"t": True, "f": False, "now": dt.datetime(2026, 12, 3)})
        entry_id = db.session.execute(text("SELECT id FROM entries")).scalar()
        for address, source in (("198.51.100.10/32", "resolved"), ("203.0.113.0/28", "typed")):
            db.session.execute(text("INSERT INTO entry_addresses (entry_id, address, source, first_seen, last_seen, "
                                    "refused) VALUES (:e, :a, :s, :now, :now, '')"),
                               {"e": entry_id, "a": address, "s": source, "now": dt.datetime(2026, 12, 3)})
        db.session.commit()
        before = [tuple(r) for r in db.session.execute(text("SELECT %s FROM entry_addresses ORDER BY address"
                                                            % columns))]
        assert len(before) == 2
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        rows = db.session.execute(text("SELECT %s, learned_via, expires_at FROM entry_addresses ORDER BY address"
                                       % columns)).all()
        assert [tuple(r)[:4] for r in rows] == before
        assert [(r.learned_via, r.expires_at) for r in rows] == [("", None), ("", None)]
        # A row written without the new columns (an older replica during a rolling upgrade) gets "" from the server.
        db.session.execute(text("INSERT INTO entry_addresses (entry_id, address, source, first_seen, last_seen, "
                                "refused) VALUES (:e, '198.51.100.11/32', 'typed', :t, :t, '')"),
                           {"e": before[0][0], "t": dt.datetime(2026, 12, 3)})
        db.session.commit()
        assert db.session.execute(text("SELECT learned_via FROM entry_addresses WHERE address = "
                                       "'198.51.100.11/32'")).scalar() == ""
        db.session.execute(text("DELETE FROM entry_addresses WHERE address = '198.51.100.11/32'"))
        db.session.commit()
        flask_migrate.downgrade(directory=MIGRATIONS, revision="0005")
        assert "learned_via" not in {c["name"] for c in inspect(db.engine).get_columns("entry_addresses")}
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM entry_addresses ORDER BY address"
                                                          % columns))] == before
        db.session.remove()
        db.engine.dispose()


def test_migration_0007_adds_the_unlisted_tables_and_keeps_every_address(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0006")
        entry_id = _old_entry("198.51.100.10")
        assert not {"dns_unlisted", "dns_unlisted_batches"} & set(inspect(db.engine).get_table_names())
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        tables = set(inspect(db.engine).get_table_names())
        assert {"dns_unlisted", "dns_unlisted_batches"} <= tables
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("dns_unlisted")}
        assert {"ix_dns_unlisted_last_seen", "ix_dns_unlisted_count"} <= indexes
        now = dt.datetime(2026, 12, 3, 12)
        db.session.add(UnlistedName(gateway="gw1", name="a.example", count=1, first_seen=now, last_seen=now))
        db.session.commit()
        db.session.add(UnlistedName(gateway="gw1", name="a.example", count=1, first_seen=now, last_seen=now))
        with pytest.raises(IntegrityError):      # one row per gateway and name
            db.session.commit()
        db.session.rollback()
        db.session.add(UnlistedName(gateway="gw2", name="a.example", count=1, first_seen=now, last_seen=now))
        db.session.commit()
        flask_migrate.downgrade(directory=MIGRATIONS, revision="0006")
        assert not {"dns_unlisted", "dns_unlisted_batches"} & set(inspect(db.engine).get_table_names())
        assert db.session.execute(text("SELECT address FROM entry_addresses WHERE entry_id = :e"),
                                  {"e": entry_id}).scalars().all() == ["198.51.100.10/32"]
        db.session.remove()
        db.engine.dispose()


def test_migration_0009_adds_the_audit_target_outcome_and_reason_and_keeps_every_event(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    previous = ScriptDirectory(MIGRATIONS).get_revision("0009").down_revision
    columns = "actor, action, object_type, object_id, summary"
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision=previous)
        # Written as SQL: the models already have the columns 0009 adds.
        for action, object_id in (("entry.create", "1"), ("user.login_failed", "")):
            db.session.execute(text("INSERT INTO audit_events (at, actor, actor_kind, remote_addr, action, "
                                    "object_type, object_id, summary) VALUES (:at, 'ada', 'user', '', :a, 'entry', "
                                    ":o, 'old')"), {"at": dt.datetime(2026, 12, 3), "a": action, "o": object_id})
        db.session.commit()
        before = [tuple(r) for r in db.session.execute(text("SELECT %s FROM audit_events ORDER BY id" % columns))]
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        rows = db.session.execute(text("SELECT %s, target, outcome, reason FROM audit_events ORDER BY id"
                                       % columns)).all()
        assert [tuple(r)[:5] for r in rows] == before
        assert [(r.target, r.outcome, r.reason) for r in rows] == [("", "done", None), ("", "done", None)]
        # The filters find old events by their object id, and new ones by target and outcome.
        assert audit.query(target="1")[1] == 1 and audit.query(outcome="done")[1] == 2
        db.session.commit()           # ends the reads' transaction, which would hold the downgrade's ALTER TABLE
        flask_migrate.downgrade(directory=MIGRATIONS, revision=previous)
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM audit_events ORDER BY id" % columns))] \
            == before
        assert "outcome" not in {c["name"] for c in inspect(db.engine).get_columns("audit_events")}
        db.session.remove()
        db.engine.dispose()


def test_migration_0008_adds_blocked_attempts_and_the_gateway_modes_and_keeps_every_gateway(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    columns = "name, connected, applied_revision, digest_match, elements, session_replica"
    with app.app_context():
        # 0008 was written on top of 0006 (0007 runs in parallel): upgrade to what it revises, whatever the head.
        base = ScriptDirectory(MIGRATIONS).get_revision("0008").down_revision
        flask_migrate.upgrade(directory=MIGRATIONS, revision=base)
        db.session.execute(text("INSERT INTO gateways (name, address, agent_version, connected, applied_revision, "
                                "digest, digest_match, elements, holds, session_replica, session_id) VALUES "
                                "('gw1', '10.0.0.1', '0.1.0', :t, 7, '', :t, 3, '', 'r1', 's1')"), {"t": True})
        db.session.commit()
        before = [tuple(r) for r in db.session.execute(text("SELECT %s FROM gateways" % columns))]
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        rows = db.session.execute(text("SELECT %s, mode, running_mode FROM gateways" % columns)).all()
        assert [tuple(r)[:6] for r in rows] == before and [(r.mode, r.running_mode) for r in rows] == [("", "")]
        assert "blocked_attempts" in inspect(db.engine).get_table_names()
        db.session.commit()   # PostgreSQL: the read's lock on gateways would hold the downgrade's ALTER TABLE
        flask_migrate.downgrade(directory=MIGRATIONS, revision=base)
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM gateways" % columns))] == before
        assert "blocked_attempts" not in inspect(db.engine).get_table_names()
        if db.engine.dialect.name == "sqlite":
            sql = db.session.execute(text("SELECT sql FROM sqlite_master WHERE name = 'gateways'")).scalar()
            assert "AUTOINCREMENT" in sql and "running_mode" not in sql
        db.session.remove()
        db.engine.dispose()


def test_migration_0011_adds_client_traffic_and_keeps_the_samples(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision="0010")
        db.session.execute(text("INSERT INTO traffic_samples (gateway, element, minute, out_bytes, in_bytes, "
                                "out_packets, in_packets) VALUES ('gw1', '198.51.100.10/32', '2026-12-06 10:00:00', "
                                "1, 2, 3, 4)"))
        db.session.commit()
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        assert db.session.execute(text("SELECT out_bytes, in_bytes FROM traffic_samples")).all() == [(1, 2)]
        minute = dt.datetime(2026, 12, 6, 10, 1)
        db.session.add(ClientTraffic(gateway="gw1", client="10.88.0.2", minute=minute, out_bytes=5, in_bytes=6,
                                     out_packets=1, in_packets=1))
        db.session.commit()
        db.session.add(ClientTraffic(gateway="gw1", client="10.88.0.2", minute=minute, out_bytes=0, in_bytes=0,
                                     out_packets=0, in_packets=0))
        with pytest.raises(IntegrityError):
            db.session.commit()       # one row per gateway, client and minute
        db.session.rollback()
        flask_migrate.downgrade(directory=MIGRATIONS, revision="0010")
        assert "client_traffic" not in inspect(db.engine).get_table_names()
        assert db.session.execute(text("SELECT out_bytes, in_bytes FROM traffic_samples")).all() == [(1, 2)]
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def test_migration_0012_adds_the_dns_answers_and_keeps_the_blocked_attempts(tmp_path, database_url):
    app = create_app({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False,
                      "database_url": database_url})
    base = "0011"
    columns = "gateway, client, destination, proto, port, count"
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, revision=base)
        db.session.execute(text("INSERT INTO blocked_attempts (gateway, client, destination, proto, port, observed, "
                                "count, bytes, first_seen, last_seen) VALUES ('gw1', '10.88.0.2', '198.51.100.20', "
                                "'tcp', '443', :f, 2, 120, :t, :t)"), {"f": False, "t": dt.datetime(2026, 12, 7)})
        db.session.commit()
        before = [tuple(r) for r in db.session.execute(text("SELECT %s FROM blocked_attempts" % columns))]
        db.session.remove()
    init_db(app)
    with app.app_context():
        assert schema_revision() == HEAD
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM blocked_attempts" % columns))] == before
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("dns_answers")}
        assert {"ix_dns_answers_last_seen", "ix_dns_answers_name"} <= indexes
        db.session.commit()
        flask_migrate.downgrade(directory=MIGRATIONS, revision=base)
        assert "dns_answers" not in inspect(db.engine).get_table_names()
        assert [tuple(r) for r in db.session.execute(text("SELECT %s FROM blocked_attempts" % columns))] == before
        db.session.remove()
        db.engine.dispose()
