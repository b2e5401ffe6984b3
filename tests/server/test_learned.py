"""services/learned.py on SQLite, PostgreSQL and MariaDB: which learned items are stored, that one frame makes one
revision, that a batch sent twice changes nothing, that an address another source holds keeps its source, and
that expiry removes learned addresses only (docs/dns.md, "Fleet-wide learning")."""

import datetime as dt
import ipaddress
import time

from og_kernel import og_protocol
from server_app.models import Entry, EntryAddress, db, utcnow
from server_app.services import changelog, entries, learned
from server_app.services.resolver import Answer, Resolver


def frame(items, caps=()):
    spool = {"learned": [dict({"ports": [], "ttl": 300, "seen": int(time.time())}, **i) for i in items],
             "caps": list(caps)}
    return og_protocol.parse_agent_frame(og_protocol.learned("learned-1-1-1.json", spool))


def rows(entry_id):
    return {a.address: a for a in db.session.query(EntryAddress).filter(EntryAddress.entry_id == entry_id)}


def test_a_frame_stores_what_matches_in_one_revision_and_again_changes_nothing(app):
    cfg = app.config["OG"]
    later = int(time.time()) + 3600
    with app.app_context():
        wild = entries.create({"target": "*.learn.example"}, cfg, "test")[0]
        exact = entries.create({"target": "exact.example", "ports": ["443/tcp"]}, cfg, "test")[0]
        typed = entries.create({"target": "198.51.100.9"}, cfg, "test")[0]
        head = changelog.head_revision()
        items = [
            {"entry": wild.id, "name": "a.learn.example", "address": "203.0.113.50", "expires": later},
            {"entry": wild.id, "name": "b.c.learn.example", "address": "2001:db8::5", "expires": later},
            {"entry": exact.id, "name": "exact.example", "address": "203.0.113.60", "expires": later},
            # not stored: internal, the wildcard's own apex, another entry's name, no such entry, an address entry
            {"entry": wild.id, "name": "db.learn.example", "address": "10.1.2.3", "expires": later},
            {"entry": wild.id, "name": "learn.example", "address": "203.0.113.51", "expires": later},
            {"entry": exact.id, "name": "a.learn.example", "address": "203.0.113.52", "expires": later},
            {"entry": 9999, "name": "a.learn.example", "address": "203.0.113.53", "expires": later},
            {"entry": typed.id, "name": "a.learn.example", "address": "203.0.113.54", "expires": later},
            # already expired: not stored
            {"entry": wild.id, "name": "old.learn.example", "address": "203.0.113.55", "expires": 1000},
        ]
        result = learned.apply("gw7", frame(items), cfg)
        assert (result["stored"], result["refused"], result["revision"]) == (3, 1, head + 1)
        assert changelog.head_revision() == head + 1            # one revision for the whole frame
        assert sorted(rows(wild.id)) == ["2001:db8::5/128", "203.0.113.50/32"]
        row = rows(wild.id)["203.0.113.50/32"]
        assert (row.source, row.learned_via, row.expires_at) == (
            "learned", "gw7", dt.datetime.fromtimestamp(later, dt.timezone.utc).replace(tzinfo=None))
        assert sorted(rows(exact.id)) == ["203.0.113.60/32"] and sorted(rows(typed.id)) == ["198.51.100.9/32"]
        ported = entries.elements_of(db.session.get(Entry, exact.id))   # 203.0.113.60 with its entry's port
        assert len(ported) == 1 and next(iter(ported)).startswith("203.0.113.60")
        assert set(changelog.published()) == {"198.51.100.9/32", "203.0.113.50/32", "2001:db8::5/128"} | ported
        json_row = [a for a in entries.to_json(db.session.get(Entry, wild.id))["addresses"]
                    if a["address"] == "203.0.113.50/32"][0]
        assert json_row["learned_via"] == "gw7" and json_row["expires_at"].endswith("Z")
        # At least once: the same frame again makes no revision and stores nothing new.
        again = learned.apply("gw7", frame(items), cfg)
        assert (again["stored"], again["revision"], changelog.head_revision()) == (0, None, head + 1)
        db.session.remove()


def test_an_address_the_entry_holds_keeps_its_source_and_expiry_removes_learned_ones_only(app):
    cfg = app.config["OG"]
    with app.app_context():
        entry = entries.create({"target": "api.learn.example"}, cfg, "test")[0]
        db.session.add(EntryAddress(entry_id=entry.id, address="203.0.113.70/32", source="resolved"))
        db.session.commit()
        soon = int(time.time()) + 60
        learned.apply("gw1", frame([
            {"entry": entry.id, "name": "api.learn.example", "address": "203.0.113.70", "expires": soon},
            {"entry": entry.id, "name": "api.learn.example", "address": "203.0.113.71", "expires": soon}]), cfg)
        have = rows(entry.id)
        assert (have["203.0.113.70/32"].source, have["203.0.113.70/32"].learned_via) == ("resolved", "")
        assert have["203.0.113.70/32"].expires_at is None   # the resolver's row ages out by its grace only
        assert have["203.0.113.71/32"].source == "learned"
        assert learned.expire(now=utcnow()) is None              # not yet
        head = changelog.head_revision()
        revision = learned.expire(now=utcnow() + dt.timedelta(seconds=120))
        assert revision == head + 1
        assert sorted(rows(entry.id)) == ["203.0.113.70/32"]
        published = set(changelog.published())
        assert "203.0.113.71/32" not in published and "203.0.113.70/32" in published
        db.session.remove()


def test_a_frames_caps_flag_the_entry(app):
    cfg = app.config["OG"]
    with app.app_context():
        entry = entries.create({"target": "*.many.example"}, cfg, "test")[0]
        learned.apply("gw1", frame([], caps=[{"entry": entry.id, "name": "x.many.example", "kind": "name",
                                              "hits": 3}]), cfg)
        assert db.session.get(Entry, entry.id).capped is True
        # A gateway cap (that gateway's learn sets are full) is the gateway's, not the entry's.
        other = entries.create({"target": "*.few.example"}, cfg, "test")[0]
        learned.apply("gw1", frame([], caps=[{"entry": other.id, "name": "x.few.example", "kind": "gateway"}]), cfg)
        assert db.session.get(Entry, other.id).capped is False
        # No resolver pass recomputes a wildcard's flag: the expiry of its learned addresses clears it.
        soon = int(time.time()) + 60
        learned.apply("gw1", frame([{"entry": entry.id, "name": "x.many.example", "address": "203.0.113.80",
                                     "expires": soon}]), cfg)
        learned.expire(now=utcnow() + dt.timedelta(seconds=120))
        assert db.session.get(Entry, entry.id).capped is False
        db.session.remove()


def test_the_resolver_takes_over_a_learned_address_dns_returns_and_why_shows_a_learned_expiry(app):
    cfg = app.config["OG"]
    with app.app_context():
        entry = entries.create({"target": "cdn.learn.example"}, cfg, "test")[0]
        later = int(time.time()) + 600
        learned.apply("gw2", frame([{"entry": entry.id, "name": "cdn.learn.example", "address": "203.0.113.90",
                                     "expires": later}]), cfg)
        why = entries.why("203.0.113.90", cfg)["entries"][0]
        assert (why["source"], why["until"]) == ("learned", entries.to_json(db.session.get(Entry, entry.id))[
            "addresses"][0]["expires_at"])
        # DNS answers the learned address: not the resolver's fast path of "nothing changed", but a change that
        # makes the row the resolver's (it then ages out by grace, and names no gateway).
        resolver = Resolver(app)
        answer = Answer("ok", [ipaddress.ip_address("203.0.113.90")], ttl=60)
        assert resolver.apply_unchanged([((entry.id, "cdn.learn.example"), answer)], utcnow()) == [
            ((entry.id, "cdn.learn.example"), answer)]
        resolver.apply(entry.id, answer)
        row = rows(entry.id)["203.0.113.90/32"]
        assert (row.source, row.learned_via, row.expires_at) == ("resolved", "", None)
        db.session.remove()
