"""The revisioned change log of the published element set: committed first, published from here."""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import delete, func, select, update

from og_kernel.og_elements import SortedTexts

from ..extensions import db
from ..models import Change, Entry, EntryElement, LogHead


def head_revision():
    """The latest committed revision (0 before the first change)."""
    value = db.session.execute(select(LogHead.revision).where(LogHead.id == 1)).scalar()
    return value or 0


def ensure_head():
    if db.session.get(LogHead, 1) is None:
        db.session.add(LogHead(id=1, revision=0))
        db.session.commit()


def published():
    """The published element set: the union of every entry's elements."""
    return set(db.session.execute(select(EntryElement.element).distinct()).scalars())


def record(added, removed, aged=False, renamed=()):
    """Within the caller's transaction: take the next revision and log the changes. Returns it or None.

    aged: the removals are addresses that aged out (a resolver grace period ended), not an operator's
    deletion; gateways then leave live connections to them alone (docs/protocol.md, "aged").
    renamed: published elements that stay but whose producing entries changed (a second entry now shares
    one): no change to the set, but the revision's delta carries their names for the gateways' metrics."""
    added, removed, renamed = sorted(set(added)), sorted(set(removed)), sorted(set(renamed))
    if not added and not removed and not renamed:
        return None
    # The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite): writers queue here, so
    # revisions are committed in the order they are numbered.
    db.session.execute(update(LogHead).where(LogHead.id == 1).values(revision=LogHead.revision + 1))
    revision = db.session.execute(select(LogHead.revision).where(LogHead.id == 1)).scalar_one()
    db.session.add_all([Change(revision=revision, op="add", element=e) for e in added] +
                       [Change(revision=revision, op="age" if aged else "remove", element=e) for e in removed] +
                       [Change(revision=revision, op="name", element=e) for e in renamed])
    return revision


def oldest_reachable():
    """The lowest base revision a delta can start from (older gateways get a snapshot)."""
    first = db.session.execute(select(func.min(Change.revision))).scalar()
    return 0 if first is None else first - 1


def delta(base, to):
    """(add, remove, aged) from revision base to revision to, net of each other; None if the log can't reach
    back. aged is the part of remove whose last removal was an ageing-out."""
    if base < oldest_reachable():
        return None
    state = {}
    rows = db.session.execute(
        select(Change.op, Change.element).where(Change.revision > base, Change.revision <= to, Change.op != "name")
        .order_by(Change.revision, Change.id))
    for op, element in rows:
        before = state.get(element, {"first": op})
        before["last"] = op
        state[element] = before
    add = sorted(e for e, s in state.items() if s["last"] == "add" and s["first"] == "add")
    remove = sorted(e for e, s in state.items() if s["last"] != "add" and s["first"] != "add")
    aged = [e for e in remove if state[e]["last"] == "age"]
    return add, remove, aged


def renamed(base, to):
    """The elements whose producing entries changed from revision base to revision to (sorted)."""
    return sorted(set(db.session.execute(select(Change.element).where(
        Change.revision > base, Change.revision <= to, Change.op == "name")).scalars()))


def names(elements=None):
    """{element: [names of the entries that produce it]}: for all published elements, or for the given ones.

    A name is the target, with the ports of a port-scoped entry ("198.51.100.20 (80/tcp)"), as the UI shows it."""
    result = {}
    stmt = select(EntryElement.element, Entry.target, Entry.ports).join(Entry, Entry.id == EntryElement.entry_id)
    if elements is None:
        rows = db.session.execute(stmt)
    else:
        wanted = sorted(set(elements))
        rows = []
        for i in range(0, len(wanted), 5000):
            rows += db.session.execute(stmt.where(EntryElement.element.in_(wanted[i:i + 5000]))).all()
    for element, target, ports in rows:
        result.setdefault(element, set()).add(target + (" (%s)" % ", ".join(ports) if ports else ""))
    return {e: sorted(t) for e, t in result.items()}


def consistent_published(tries=20):
    """(head revision, published set) that belong together, at any isolation level.

    Every change of the published set raises the head in the same transaction, so a head read before and an
    equal head read after the set prove that no commit fell between (under READ COMMITTED each statement
    sees its own snapshot, so one read of each could pair revision N with the set of N+1).
    """
    revision = head_revision()
    for _attempt in range(tries):
        elements = published()
        after = head_revision()
        if after == revision:
            return revision, elements
        revision = after
    return revision, published()     # writers never paused: the next revision's ack check heals it


def snapshot():
    """(revision, sorted elements) that belong together."""
    return published_set().snapshot()


class PublishedSet(object):
    """The published set of one database, kept in memory at a revision and moved forward by the log's deltas.

    Each revision then costs work in proportion to its change (a few set and sorted-block updates, and a hash
    of the cached blocks) instead of a read, a sort and a filter of the whole set. It follows the change log,
    not this process's own commits, so the revisions of every replica on the same database reach it; when the
    log can't reach back (pruned, or the database was replaced) it reads the whole set again."""

    MAX_HOLDINGS = 64

    def __init__(self):
        self.lock = threading.Lock()
        self.revision = None
        self.members = set()
        self.sorted = SortedTexts()
        self.loads = 0            # whole-set reads (tests and the bench check that revisions cost none)
        # holding key -> [holding, {text: reason} skipped, SortedTexts of the rest or None while nothing is]
        self.holdings = {}

    def follow(self):
        """Bring the set to the head revision (caller holds the lock); return that revision."""
        head = head_revision()
        if self.revision == head:
            return head
        answer = delta(self.revision, head) if self.revision is not None and self.revision < head else None
        if answer is None:
            self._load()
        else:
            self._apply(answer[0], answer[1])
            self.revision = head
        return self.revision

    def _load(self):
        revision, elements = consistent_published()
        self.revision, self.members, self.sorted = revision, set(elements), SortedTexts(elements)
        self.holdings = {}
        self.loads += 1

    def _apply(self, add, remove):
        # The guards keep a set read a revision ahead of its number (consistent_published's last resort) right.
        removed = [e for e in remove if e in self.members]
        added = [e for e in add if e not in self.members]
        for text in removed:
            self.members.discard(text)
            self.sorted.discard(text)
        for text in added:
            self.members.add(text)
            self.sorted.add(text)
        for entry in self.holdings.values():
            holding, skipped, held = entry
            for text in removed:
                if skipped.pop(text, None) is None and held is not None:
                    held.discard(text)
            for text in added:
                why = holding.reason(text)
                if why is not None:
                    skipped[text] = why
                elif held is not None:
                    held.add(text)
            if skipped and held is None:   # its first skipped element: from now on it has a set of its own
                entry[2] = SortedTexts(self.members.difference(skipped))

    def _holding(self, holding):
        """The [holding, skipped, held] entry of a holding (caller holds the lock), filtered once when new."""
        entry = self.holdings.get(holding.key)
        if entry is None:
            if len(self.holdings) >= self.MAX_HOLDINGS:
                self.holdings.clear()
            skipped = holding.skipped(self.members)
            entry = self.holdings[holding.key] = [
                holding, skipped, SortedTexts(self.members.difference(skipped)) if skipped else None]
        return entry

    def _texts(self, holding):
        """(SortedTexts, {text: reason} skipped) of what a gateway holding so holds (caller holds the lock)."""
        if holding is None:
            return self.sorted, {}
        _holding, skipped, held = self._holding(holding)
        return (self.sorted if held is None else held), skipped

    def at_head(self, holding=None):
        """(revision, {text: reason} skipped, digest) at the head: of the whole set, or of what a gateway
        holding `holding` holds."""
        with self.lock:
            revision = self.follow()
            texts, skipped = self._texts(holding)
            return revision, dict(skipped), texts.digest()

    def held_count(self, holding=None):
        """How many elements a gateway holding `holding` is meant to hold at the head."""
        with self.lock:
            self.follow()
            return len(self._texts(holding)[0])

    def snapshot(self):
        """(head revision, its elements sorted)."""
        with self.lock:
            revision = self.follow()
            return revision, list(self.sorted)

    def digest_at(self, revision, holding=None):
        """The digest as at an older revision, or None if the log can't reach back: the delta since then is
        undone in the sorted blocks, the digest taken, and the delta done again."""
        with self.lock:
            head = self.follow()
            answer = delta(revision, head) if revision <= head else None
            if answer is None:
                return None
            add, remove, _aged = answer
            texts, skipped = self._texts(holding)
            taken = [e for e in add if e in self.members and e not in skipped]
            given = [e for e in remove if e not in self.members and (holding is None or holding.reason(e) is None)]
            try:
                for text in taken:
                    texts.discard(text)
                for text in given:
                    texts.add(text)
                return texts.digest()
            finally:
                for text in given:
                    texts.discard(text)
                for text in taken:
                    texts.add(text)


_published = weakref.WeakKeyDictionary()   # engine -> PublishedSet: one process may serve several databases
_published_lock = threading.Lock()


def published_set():
    """The PublishedSet of the current app's database."""
    with _published_lock:
        found = _published.get(db.engine)
        if found is None:
            found = _published[db.engine] = PublishedSet()
        return found


def digest_at_head():
    """(revision, digest) of the current published set."""
    revision, _skipped, value = published_set().at_head()
    return revision, value


def held_at_head(holding):
    """(revision, {element: reason} not held, digest of the rest) for a gateway holding `holding` at the head.

    A thousand gateways share a few holdings: each is filtered once, then only each revision's delta is."""
    return published_set().at_head(holding)


def held_count_at_head(holding):
    """How many elements a gateway holding `holding` (None: the whole set) is meant to hold at the head."""
    return published_set().held_count(holding)


def digest_at(revision, holding=None):
    """The digest of the published set as it was at `revision` (None if the log can't reach back); with a
    holding (og_elements.Holding), of the part of it that a gateway holding so is meant to hold."""
    return published_set().digest_at(revision, holding)


def prune(keep):
    """Drop log rows older than the newest `keep` revisions."""
    cutoff = head_revision() - keep
    if cutoff > 0:
        db.session.execute(delete(Change).where(Change.revision <= cutoff))
        db.session.commit()
