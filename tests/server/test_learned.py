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
        # The resolver's row keeps its source (and its grace while the resolver returns it); it notes the learned
        # gateway and expiry for when the resolver stops returning it, and learned.expire leaves it alone.
        assert (have["203.0.113.70/32"].source, have["203.0.113.70/32"].learned_via) == ("resolved", "gw1")
        assert have["203.0.113.70/32"].expires_at is not None
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
        entry_id = entry.id
        later = int(time.time()) + 600
        learned.apply("gw2", frame([{"entry": entry_id, "name": "cdn.learn.example", "address": "203.0.113.90",
                                     "expires": later}]), cfg)
        why = entries.why("203.0.113.90", cfg)["entries"][0]
        assert (why["source"], why["until"]) == ("learned", entries.to_json(db.session.get(Entry, entry_id))[
            "addresses"][0]["expires_at"])
        # DNS answers the learned address: not the resolver's fast path of "nothing changed", but a change that
        # makes the row the resolver's while it returns it (shown as resolved, naming no gateway).
        resolver = Resolver(app)
        answer = Answer("ok", [ipaddress.ip_address("203.0.113.90")], ttl=60)
        assert resolver.apply_unchanged([((entry_id, "cdn.learn.example"), answer)], utcnow()) == [
            ((entry_id, "cdn.learn.example"), answer)]
        resolver.apply(entry_id, answer)
        row = rows(entry_id)["203.0.113.90/32"]
        assert row.source == "resolved"
        shown = entries.to_json(db.session.get(Entry, entry_id))["addresses"][0]
        assert (shown["source"], shown["learned_via"], shown["expires_at"]) == ("resolved", None, None)
        # gw1's og-dns goes on answering it, for longer: the learned expiry moves on under the resolved row.
        longer = later + 300
        learned.apply("gw1", frame([{"entry": entry_id, "name": "cdn.learn.example", "address": "203.0.113.90",
                                     "expires": longer}]), cfg)
        db.session.remove()
        # The resolver's next answer lacks it (a CDN's pool rotated on): instead of the resolver's grace (which
        # would close it on the gateways that did not answer the client while gw1's og-dns still hands it out),
        # it is learned again and ends at its learned expiry.
        other = Answer("ok", [ipaddress.ip_address("203.0.113.91")], ttl=60)
        resolver.apply(entry_id, other)
        row = rows(entry_id)["203.0.113.90/32"]
        assert (row.source, row.learned_via, row.grace_until) == ("learned", "gw1", None)
        assert row.expires_at == dt.datetime.fromtimestamp(longer, dt.timezone.utc).replace(tzinfo=None)
        far = utcnow() + dt.timedelta(seconds=cfg["resolve_grace"] + 60)    # past the grace, before the expiry
        resolver.apply(entry_id, other, now=far)
        assert "203.0.113.90/32" in rows(entry_id) and "203.0.113.90/32" in changelog.published()
        assert learned.expire(now=row.expires_at + dt.timedelta(seconds=1)) is not None
        assert "203.0.113.90/32" not in rows(entry_id)
        db.session.remove()
