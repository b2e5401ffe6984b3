"""The published set the server keeps in memory (changelog.PublishedSet): after every kind of revision its
digests equal digest_canonical of the set read from the database, on the replica that wrote and on another one
that only follows the change log; and when the log can't reach back it reads the set again."""

import ipaddress
import os

from server_app import create_app
from server_app.models import db
from server_app.services import changelog, entries
from og_kernel.og_elements import Holding, digest_canonical

HOLDING = Holding([4], ["198.51.100.0/28"])   # skips IPv6 and 198.51.100.0-15
INTERNAL = ipaddress.ip_network("198.51.100.0/28")


def _replica(tmp_path, database_url):
    """A second app on the same database: another replica, with its own engine and its own PublishedSet."""
    data = tmp_path / "replica"
    os.makedirs(str(data), exist_ok=True)
    return create_app(config={"data_dir": str(data), "secret_key": "s" * 32, "database_url": database_url,
                              "resolver_enabled": False})


def _check(app, history):
    """The replica's head and held digests against the database's set, and digest_at against each revision's."""
    with app.app_context():
        head, current = changelog.head_revision(), changelog.published()
        expected_skipped = {e: "family_disabled" for e in current if ":" in e}
        expected_skipped.update({e: "internal" for e in current
                                 if ":" not in e and ipaddress.ip_network(e.split()[0]).overlaps(INTERNAL)})
        assert changelog.digest_at_head() == (head, digest_canonical(current))
        assert changelog.held_at_head(HOLDING) == (head, expected_skipped,
                                                   digest_canonical(current - set(expected_skipped)))
        for revision, elements in history.items():
            assert changelog.digest_at(revision) == digest_canonical(elements)
            assert changelog.digest_at(revision, HOLDING) == HOLDING.digest(elements)
        assert changelog.snapshot() == (head, sorted(current))
        db.session.commit()
        return changelog.published_set().loads


def test_incremental_digests_equal_the_database_sets_after_adds_removes_agings_and_on_a_replica(app, tmp_path,
                                                                                                database_url):
    replica = _replica(tmp_path, database_url)
    config = app.config["OG"]
    history = {}

    def step(action):
        with app.app_context():
            action()
            db.session.commit()
            history[changelog.head_revision()] = changelog.published()
            db.session.commit()
        # Both follow from their first read: no revision makes either read the whole set again.
        assert _check(app, history) == 1
        assert _check(replica, history) == 1

    with app.app_context():
        changelog.ensure_head()
    history[0] = set()
    assert _check(app, history) == 1 and _check(replica, history) == 1
    made = {}

    def create(name, **data):
        made[name] = entries.create(dict(data), config, "test")[0].id
    step(lambda: create("a", target="198.51.100.1"))                    # internal for HOLDING
    step(lambda: create("b", target="203.0.113.0/24", ports=["443/tcp"]))
    step(lambda: create("c", target="2001:db8::1"))                     # IPv6: HOLDING's family is off
    step(lambda: create("d", target="198.51.100.200"))
    step(lambda: create("e", target="198.51.100.200", ports=["80/tcp"]))
    step(lambda: create("f", target="198.51.100.200", ports=["80/tcp", "443/tcp"]))  # shares e's element
    step(lambda: entries.import_entries([{"target": "198.51.100.%d" % i} for i in range(2, 40)], config, "test"))
    step(lambda: entries.delete(made["b"]))
    step(lambda: entries.delete(made["a"]))
    step(lambda: entries.delete(made["e"]))                             # still published by f: no change
    step(lambda: entries.delete(made["d"]))

    def age_out():                                                     # the resolver's path when a grace ends
        entry = db.session.get(entries.Entry, made["c"])
        entries.sync_elements({entry: set()}, aged=True)
    step(age_out)
    with app.app_context():
        aged = changelog.delta(max(history) - 1, max(history))
    assert aged == ([], ["2001:db8::1/128"], ["2001:db8::1/128"])

    def back():                                                        # the address is answered again
        entry = db.session.get(entries.Entry, made["c"])
        entries.sync_elements({entry: entries.elements_of(entry)})
    step(back)
    step(lambda: entries.delete(made["f"]))


def test_a_replica_behind_a_pruned_log_reads_the_set_again(app, tmp_path, database_url):
    replica = _replica(tmp_path, database_url)
    config = app.config["OG"]
    with app.app_context():
        changelog.ensure_head()
        entries.create({"target": "198.51.100.1"}, config, "test")
    assert _check(replica, {}) == 1
    with app.app_context():
        for i in range(20, 25):
            entries.create({"target": "198.51.100.%d" % i}, config, "test")
        changelog.prune(2)
        assert changelog.digest_at(1) is None          # pruned away
    assert _check(app, {}) == 1
    # The replica was at revision 1, before the pruned rows: it can't follow, so it reads the set again.
    assert _check(replica, {}) == 2
