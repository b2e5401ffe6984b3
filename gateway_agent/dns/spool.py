"""What og-dns learned, for the agent: atomically written JSON files in spool_dir, at most one a second.

A file: {"gateway", "learned": [{"entry", "name", "address", "ports", "ttl", "expires", "seen"}],
"unlisted": [{"name", "count", "first", "last"}], "caps": [{"entry", "name", "kind", "hits"}]} (times in epoch
seconds). An address is reported again only when it is new or its expiry moved by 60 s or more; "unlisted" and
"caps" count what happened since the previous file. A file holds what the agent can send as one learned frame
(og_protocol): at most FILE_ITEMS items per list (more in a second go to several files), names the protocol takes
(the root name as "."; longer than og_protocol.MAX_DOMAIN counted as dropped). Beyond max_files the oldest files
are removed (counted).
"""

from __future__ import annotations

import json
import os
import time

from og_kernel.og_protocol import MAX_DOMAIN, MAX_LEARNED

REPORT_MOVE = 60
# Items of each list in one file: under og_protocol.MAX_LEARNED, and with a name of at most MAX_DOMAIN
# characters per item, a file stays well under og_protocol.MAX_MESSAGE.
FILE_ITEMS = min(1000, MAX_LEARNED)


def _order(name):
    """learned-<ms>-<pid>-<seq>.json sorts by its numbers (oldest first); any other name sorts last."""
    try:
        return (0, [int(x) for x in name[len("learned-"):-len(".json")].split("-")])
    except ValueError:
        return (1, [name])


def spool_files(directory):
    """The spool files in `directory`, oldest first (og-dns bounds them, the agent sends them in this order)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if n.startswith("learned-") and n.endswith(".json")), key=_order)


class Spool(object):
    def __init__(self, directory, gateway, max_files=1000, unlisted_table=10000, metrics=None):
        self.directory = directory
        self.gateway = gateway
        self.max_files = max_files
        self.unlisted_table = unlisted_table
        self.metrics = metrics
        self.seq = 0
        self.learned = {}
        self.reported = {}
        self.unlisted = {}
        self.unlisted_overflow = 0
        self.caps = {}
        if directory:
            os.makedirs(directory, exist_ok=True)

    def note_learned(self, entry, name, address, ports, ttl, expires, now):
        if not self.directory:
            return
        key = (entry, name, address)
        last = self.reported.get(key)
        if last is not None and abs(expires - last) < REPORT_MOVE:
            return
        self.learned[key] = {"entry": entry, "name": name, "address": address, "ports": list(ports),
                             "ttl": ttl, "expires": int(expires), "seen": int(now)}

    def forget(self, key):
        self.reported.pop(key, None)

    def note_unlisted(self, name, now):
        if not self.directory:
            return
        name = name or "."   # the root name (a resolver's priming query)
        item = self.unlisted.get(name)
        if item is None:
            if len(self.unlisted) >= self.unlisted_table or len(name) > MAX_DOMAIN:
                self.unlisted_overflow += 1
                return
            item = self.unlisted[name] = {"name": name, "count": 0, "first": int(now), "last": int(now)}
        item["count"] += 1
        item["last"] = int(now)

    def note_cap(self, entry, name, kind):
        if not self.directory:
            return
        key = (entry, name, kind)
        self.caps[key] = self.caps.get(key, 0) + 1

    def pending(self):
        return bool(self.learned or self.unlisted or self.caps)

    def flush(self, now=None):
        """Write what is new (one file, or several of FILE_ITEMS items per list); the last file's path or None."""
        if not self.directory or not self.pending():
            return None
        now = time.time() if now is None else now
        lists = {"learned": sorted(self.learned.values(), key=lambda r: (r["entry"], r["name"], r["address"])),
                 "unlisted": sorted(self.unlisted.values(), key=lambda r: r["name"]),
                 "caps": [{"entry": e, "name": n, "kind": k, "hits": c}
                          for (e, n, k), c in sorted(self.caps.items())]}
        path = None
        for start in range(0, max(len(items) for items in lists.values()), FILE_ITEMS):
            body = {"gateway": self.gateway}
            body.update((key, items[start:start + FILE_ITEMS]) for key, items in lists.items())
            if self.unlisted_overflow and start == 0:
                body["unlisted_dropped"] = self.unlisted_overflow
            path = self._write(body, now)
        for key, record in self.learned.items():
            self.reported[key] = record["expires"]
        self.learned, self.unlisted, self.caps, self.unlisted_overflow = {}, {}, {}, 0
        if self.metrics is not None:
            self.metrics.spool_files.inc()
        self.bound()
        return path

    def _write(self, body, now):
        self.seq += 1
        name = "learned-%d-%d-%d.json" % (int(now * 1000), os.getpid(), self.seq)
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(body, fh, sort_keys=True)
        os.replace(tmp, path)
        return path

    def bound(self):
        files = spool_files(self.directory)
        for old in files[:max(0, len(files) - self.max_files)]:
            try:
                os.unlink(os.path.join(self.directory, old))
            except FileNotFoundError:
                continue
            if self.metrics is not None:
                self.metrics.spool_dropped.inc()
