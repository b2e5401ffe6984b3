"""The revisioned change log of the published element set: committed first, published from here."""

from __future__ import annotations

import threading

from sqlalchemy import delete, func, select, update

from og_kernel.og_elements import digest_canonical

from ..models import Change, EntryElement, LogHead, db


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
    from ..models import Entry
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


def digest_at(revision, holding=None):
    """The digest of the published set as it was at `revision` (None if the log can't reach back); with a
    holding (og_elements.Holding), of the part of it that a gateway holding so is meant to hold."""
    head, current = consistent_published()
    answer = delta(revision, head)
    if answer is None:
        return None
    add, remove, _aged = answer
    elements = (current - set(add)) | set(remove)
    return digest_canonical(elements) if holding is None else holding.digest(elements)


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
    revision, elements = consistent_published()
    return revision, sorted(elements)


_digest_cache = {}


def digest_at_head():
    """(revision, digest) of the current published set, cached per revision."""
    revision = head_revision()
    if revision not in _digest_cache:
        revision, elements = consistent_published()
        _digest_cache.clear()
        _digest_cache[revision] = digest_canonical(elements)
    return revision, _digest_cache[revision]


_held = {}
_held_lock = threading.Lock()


def held_at_head(holding):
    """(revision, {element: reason} not held, digest of the rest) for a gateway holding `holding` at the head.

    Cached per database, revision and distinct holding: a thousand gateways share a few holdings, so each new
    revision costs one read of the published set and one filter per holding."""
    key = str(db.engine.url)
    with _held_lock:
        revision = head_revision()
        cached = _held.get(key)
        if cached is None or cached[0] != revision:
            revision, elements = consistent_published()
            cached = _held[key] = (revision, elements, {})
        revision, elements, per_holding = cached
        if holding.key not in per_holding:
            skipped = holding.skipped(elements)
            if not skipped and None not in per_holding:   # holdings that skip nothing share one digest
                per_holding[None] = ({}, digest_canonical(elements))
            per_holding[holding.key] = (skipped, holding.digest(elements, skipped) if skipped
                                        else per_holding[None][1])
        skipped, value = per_holding[holding.key]
        return revision, skipped, value


def prune(keep):
    """Drop log rows older than the newest `keep` revisions."""
    cutoff = head_revision() - keep
    if cutoff > 0:
        db.session.execute(delete(Change).where(Change.revision <= cutoff))
        db.session.commit()
