"""The last applied state on disk, so a rebooted gateway works before it connects.

The state file holds a whole set, written atomically; each delta after it is one fsync'd line appended to a
journal beside it (`<state>.journal`), so a delta costs one short write instead of rewriting 100,000 elements.
The journal is folded into the state file (compacted) on every snapshot and when it has grown long. Restore
is the state file plus the journal's lines replayed in order; a torn last line (a crash mid-write) is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

log = logging.getLogger("og.agent")

COMPACT_AFTER = 10000  # journal lines before it is folded into the state file


class StateError(ValueError):
    """The state file exists but cannot be used; the message names the file and what is wrong."""


def save(path, revision, elements):
    """Write revision and elements to `path` through a temporary file, fsync and rename (never half-written)."""
    _write(path, {"revision": revision, "elements": sorted(elements), "saved_at": time.time()}, ".state-")


def _write(path, data, prefix):
    """`data` as JSON to `path` through a temporary file, fsync and rename, the folder fsync'd; raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path):
    """(revision, elements) of the state file alone, or (0, None) when there is none; StateError when unusable."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return 0, None
    except OSError as exc:
        raise StateError("cannot read %s: %s" % (path, exc.strerror))
    except ValueError as exc:
        raise StateError("%s is not valid JSON (%s); it is rewritten at the next applied revision" % (path, exc))
    revision = data.get("revision") if isinstance(data, dict) else None
    elements = data.get("elements") if isinstance(data, dict) else None
    if (not isinstance(revision, int) or isinstance(revision, bool) or revision < 0
            or not isinstance(elements, list) or not all(isinstance(e, str) for e in elements)):
        raise StateError("%s must hold {\"revision\": <int >= 0>, \"elements\": [<text>, ...]}; "
                         "it is rewritten at the next applied revision" % path)
    return revision, elements


def names_path(path):
    return path + ".names.json"


def save_names(path, names):
    """Keep the element -> entry names map beside the state (only for metrics labels: best effort)."""
    if not path:
        return
    target = names_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".names-", dir=os.path.dirname(os.path.abspath(target)))
        with os.fdopen(fd, "w") as fh:
            json.dump(names, fh)
        os.replace(tmp, target)
    except OSError:
        pass


def load_names(path):
    """The saved names map, or {} when there is none or it is unusable."""
    try:
        with open(names_path(path)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, list)}


def mode_path(path):
    return path + ".mode.json"


def save_mode(path, mode):
    """Keep the mode a server set (a mode frame) beside the state, so that an agent restarted while no server
    answers runs it rather than its configuration's (fail-static, like the rules). Raises OSError."""
    if path:
        _write(mode_path(path), {"mode": mode}, ".mode-")


def load_mode(path, modes=("enforce", "observe")):
    """The mode a server last set, or "" when none was saved; raises StateError for a file that holds another
    value (the configuration's mode then applies until a server sends one)."""
    try:
        with open(mode_path(path)) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:
        raise StateError("%s is unreadable (%s); it is rewritten at the next mode a server sends"
                         % (mode_path(path), exc)) from exc
    mode = data.get("mode") if isinstance(data, dict) else None
    if mode not in modes:
        raise StateError("%s must hold {\"mode\": \"enforce\"} or {\"mode\": \"observe\"}, not %r; it is "
                         "rewritten at the next mode a server sends" % (mode_path(path), data))
    return mode


def journal_path(path):
    return path + ".journal"


class Store:
    """The state file and its journal of deltas: restore() reads both, record() appends, save() compacts."""

    def __init__(self, path, compact_after=COMPACT_AFTER):
        self.path = path
        self.compact_after = compact_after
        self.lines = 0  # journal lines since the last compaction
        self._journal = None

    def restore(self):
        """(revision, elements, names) from the state file and the journal replayed on it; elements is None when
        nothing was ever saved. A torn or unusable line ends the replay (and is cut off the journal): what is
        returned is then an earlier revision, which the server brings up to date. StateError as load()."""
        try:
            revision, elements = load(self.path)
        except StateError:
            self._empty_journal()  # its lines apply to a state that is gone: the next deltas start afresh
            raise
        names = load_names(self.path)
        current = None if elements is None else set(elements)
        try:
            fh = open(journal_path(self.path), "rb")
        except FileNotFoundError:
            return revision, elements, names
        except OSError as exc:
            raise StateError("cannot read %s: %s" % (journal_path(self.path), exc.strerror))
        good = replayed = 0
        with fh:
            data = fh.read()
        for raw in data.splitlines(keepends=True):
            line = _journal_line(raw)
            if line is None:
                log.warning("%s: unusable line %d (torn by a crash?): replay stops at revision %d",
                            journal_path(self.path), self.lines + 1, revision)
                break
            base, rev, add, remove, line_names = line
            good += len(raw)
            self.lines += 1
            if rev <= revision and current is not None:
                continue  # already in the state file (a crash between compaction and the journal's truncation)
            if base != revision:
                log.warning("%s: line %d starts at revision %d, not %d: replay stops there",
                            journal_path(self.path), self.lines, base, revision)
                good -= len(raw)
                self.lines -= 1
                break
            current = (current or set()) - remove | add
            for text in remove:
                names.pop(text, None)
            names.update({k: v for k, v in line_names.items() if k in current})
            revision = rev
            replayed += 1
        if good < len(data):
            # Appending after a torn line would glue the next delta onto it.
            with open(journal_path(self.path), "r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
        if replayed:
            log.info("replayed %d journal line(s) onto %s: revision %d", replayed, self.path, revision)
        return revision, None if current is None else sorted(current), names

    def record(self, base, revision, add, remove, names, elements, all_names):
        """Append one applied delta (fsync'd); compact into the state file when the journal has grown long.

        `elements` and `all_names` are the whole applied state after the delta, read only when compacting.
        """
        if self.lines >= self.compact_after:
            self.save(revision, elements, all_names)
            return
        line = json.dumps({"base": base, "revision": revision, "add": sorted(add), "remove": sorted(remove),
                           "names": names}, separators=(",", ":")) + "\n"
        if self._journal is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._journal = open(journal_path(self.path), "ab")
        self._journal.write(line.encode())
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.lines += 1

    def save(self, revision, elements, names=None):
        """Write the whole state (and names), then empty the journal: a compaction."""
        save(self.path, revision, elements)
        if names is not None:
            save_names(self.path, names)
        self._empty_journal()

    def _empty_journal(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            with open(journal_path(self.path), "r+b") as fh:
                fh.truncate(0)
                os.fsync(fh.fileno())
        except FileNotFoundError:
            pass
        self.lines = 0

    def close(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _journal_line(raw):
    """(base, revision, add set, remove set, names) of one journal line, or None when it is torn or misshapen."""
    if not raw.endswith(b"\n"):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    base, revision = data.get("base"), data.get("revision")
    add, remove, names = data.get("add"), data.get("remove"), data.get("names") or {}
    if (not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (base, revision))
            or not all(isinstance(v, list) and all(isinstance(e, str) for e in v) for v in (add, remove))
            or not isinstance(names, dict)):
        return None
    names = {k: v for k, v in names.items() if isinstance(k, str) and isinstance(v, list)}
    return base, revision, set(add), set(remove), names
