"""What og-dns learned, for the agent: atomically written JSON files in spool_dir, at most one a second.

A file: {"gateway", "learned": [{"entry", "name", "address", "ports", "ttl", "expires", "seen"}],
"unlisted": [{"name", "count", "first", "last"}], "caps": [{"entry", "name", "kind", "hits"}],
"answers": [{"name", "addresses", "last"}]} (times in epoch seconds). An address is reported again only when it
is new or its expiry moved by 60 s or more; "unlisted" and "caps" count what happened since the previous file;
"answers" (the addresses each forwarded answer gave its query name, the newest MAX_ANSWER_ADDRESSES of a name) is
written only when there are some, and a name is reported again with the same addresses only after 60 s.
A file holds what the agent can send as one learned frame (og_protocol): at most FILE_ITEMS items per list and
FILE_ANSWERS answers (more in a second go to several files), names the protocol takes (the root name as ".";
longer than og_protocol.MAX_DOMAIN counted as dropped). Beyond max_files the oldest files
are removed (counted).
"""

from __future__ import annotations

import json
import os
import time

from og_kernel.og_protocol import MAX_ANSWER_ADDRESSES, MAX_DOMAIN, MAX_LEARNED

REPORT_MOVE = 60
# Items of each list in one file: under og_protocol.MAX_LEARNED, and with a name of at most MAX_DOMAIN
# characters per item, a file stays well under og_protocol.MAX_MESSAGE.
FILE_ITEMS = min(1000, MAX_LEARNED)
# An answer is up to ~1 kB (a 255-character name and 16 IPv6 addresses): 250 of them keep a file under the limit
# next to the other lists' items.
FILE_ANSWERS = 250


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
        # name -> {address: None} (insertion order: the newest last) and the last answer's time, since the last
        # file; reported_answers: name -> (addresses, when) of the last file that named it. Both at most
        # unlisted_table names.
        self.answers = {}
        self.answers_last = {}
        self.answers_overflow = 0
        self.reported_answers = {}
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

    def note_answer(self, name, addresses, now):
        """The query `name` was answered with `addresses` (called after the answer went out)."""
        if not self.directory or not addresses:
            return
        name = name or "."
        held = self.answers.get(name)
        if held is None:
            if len(name) > MAX_DOMAIN:
                return
            last = self.reported_answers.get(name)
            if last is not None and now - last[1] < REPORT_MOVE and set(addresses) <= last[0]:
                return      # told within the minute: the server's last seen is kept to the minute
            if len(self.answers) >= self.unlisted_table:
                self.answers_overflow += 1
                return
            held = self.answers[name] = {}
        for address in addresses:
            held.pop(address, None)
            held[address] = None
        while len(held) > MAX_ANSWER_ADDRESSES:
            del held[next(iter(held))]
        self.answers_last[name] = int(now)

    def note_cap(self, entry, name, kind):
        if not self.directory:
            return
        key = (entry, name, kind)
        self.caps[key] = self.caps.get(key, 0) + 1

    def pending(self):
        return bool(self.learned or self.unlisted or self.caps or self.answers)

    def flush(self, now=None):
        """Write what is new (one file, or several of FILE_ITEMS items per list); the last file's path or None."""
        if not self.directory or not self.pending():
            return None
        now = time.time() if now is None else now
        lists = {"learned": sorted(self.learned.values(), key=lambda r: (r["entry"], r["name"], r["address"])),
                 "unlisted": sorted(self.unlisted.values(), key=lambda r: r["name"]),
                 "caps": [{"entry": e, "name": n, "kind": k, "hits": c}
                          for (e, n, k), c in sorted(self.caps.items())]}
        answers = [{"name": name, "addresses": list(held), "last": self.answers_last[name]}
                   for name, held in sorted(self.answers.items())]
        files = max(-(-max(len(items) for items in lists.values()) // FILE_ITEMS), -(-len(answers) // FILE_ANSWERS))
        path = None
        for part in range(files):
            body = {"gateway": self.gateway}
            body.update((key, items[part * FILE_ITEMS:(part + 1) * FILE_ITEMS]) for key, items in lists.items())
            if answers[part * FILE_ANSWERS:(part + 1) * FILE_ANSWERS]:
                body["answers"] = answers[part * FILE_ANSWERS:(part + 1) * FILE_ANSWERS]
            if part == 0 and self.unlisted_overflow:
                body["unlisted_dropped"] = self.unlisted_overflow
            if part == 0 and self.answers_overflow:
                body["answers_dropped"] = self.answers_overflow
            path = self._write(body, now)
        for key, record in self.learned.items():
            self.reported[key] = record["expires"]
        for name, held in self.answers.items():
            self.reported_answers.pop(name, None)     # re-inserted last: the oldest report goes first at the bound
            self.reported_answers[name] = (frozenset(held), self.answers_last[name])
        while len(self.reported_answers) > self.unlisted_table:
            del self.reported_answers[next(iter(self.reported_answers))]
        self.learned, self.unlisted, self.caps, self.unlisted_overflow = {}, {}, {}, 0
        self.answers, self.answers_last, self.answers_overflow = {}, {}, 0
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
