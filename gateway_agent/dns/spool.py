"""What og-dns learned, for the agent: atomically written JSON files in spool_dir, at most one a second.

A file: {"gateway", "learned": [{"entry", "name", "address", "ports", "ttl", "expires", "seen"}],
"unlisted": [{"name", "count", "first", "last"}], "caps": [{"entry", "name", "kind", "hits"}]} (times in epoch
seconds). An address is reported again only when it is new or its expiry moved by 60 s or more; "unlisted" and
"caps" count what happened since the previous file. Beyond max_files the oldest files are removed (counted).
"""

from __future__ import annotations

import json
import os
import time

REPORT_MOVE = 60


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
        item = self.unlisted.get(name)
        if item is None:
            if len(self.unlisted) >= self.unlisted_table:
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
        """Write one file if anything is new; its path or None."""
        if not self.directory or not self.pending():
            return None
        now = time.time() if now is None else now
        body = {"gateway": self.gateway,
                "learned": sorted(self.learned.values(), key=lambda r: (r["entry"], r["name"], r["address"])),
                "unlisted": sorted(self.unlisted.values(), key=lambda r: r["name"]),
                "caps": [{"entry": e, "name": n, "kind": k, "hits": c} for (e, n, k), c in sorted(self.caps.items())]}
        if self.unlisted_overflow:
            body["unlisted_dropped"] = self.unlisted_overflow
        self.seq += 1
        name = "learned-%d-%d-%d.json" % (int(now * 1000), os.getpid(), self.seq)
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(body, fh, sort_keys=True)
        os.replace(tmp, path)
        for key, record in self.learned.items():
            self.reported[key] = record["expires"]
        self.learned, self.unlisted, self.caps, self.unlisted_overflow = {}, {}, {}, 0
        if self.metrics is not None:
            self.metrics.spool_files.inc()
        self.bound()
        return path

    def bound(self):
        files = sorted((f for f in os.listdir(self.directory) if f.startswith("learned-") and f.endswith(".json")),
                       key=lambda f: [int(x) for x in f[len("learned-"):-len(".json")].split("-")])
        for old in files[:max(0, len(files) - self.max_files)]:
            try:
                os.unlink(os.path.join(self.directory, old))
            except FileNotFoundError:
                continue
            if self.metrics is not None:
                self.metrics.spool_dropped.inc()
