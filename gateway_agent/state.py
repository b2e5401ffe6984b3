"""The last applied state on disk, written atomically, so a rebooted gateway works before it connects."""

from __future__ import annotations

import json
import os
import tempfile
import time


class StateError(ValueError):
    """The state file exists but cannot be used; the message names the file and what is wrong."""


def save(path, revision, elements):
    """Write revision and elements to `path` through a temporary file, fsync and rename (never half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"revision": revision, "elements": sorted(elements), "saved_at": time.time()}, fh)
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
    """(revision, elements) from disk, or (0, None) when there is no state file; StateError when it is unusable."""
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
