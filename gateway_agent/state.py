"""The last applied state on disk, written atomically, so a rebooted gateway works before it connects."""

from __future__ import annotations

import json
import os
import tempfile
import time


def save(path, revision, elements):
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
    """(revision, elements) from disk, or (0, None) when there is no usable state."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        return int(data["revision"]), list(data["elements"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, None
