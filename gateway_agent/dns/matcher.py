"""The domains file and the matching of DNS names against its entries (exact and wildcard).

"example.com" matches only that name; "*.example.com" matches one or more labels before example.com, never
example.com itself; case-insensitive, a trailing dot ignored.
"""

from __future__ import annotations

import json


class DomainsError(Exception):
    """A domains file that cannot be read or is malformed."""


def normal(name):
    return str(name).rstrip(".").lower()


class Matcher(object):
    """Entries by exact name and by wildcard suffix; match(name) -> [(entry, pattern, ports)]."""

    def __init__(self, domains=(), revision=0):
        self.revision = revision
        self.exact = {}
        self.wild = {}
        for item in domains:
            try:
                entry, pattern = int(item["entry"]), normal(item["name"])
                ports = tuple(str(p) for p in item.get("ports") or ())
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DomainsError("domain %r: give {\"entry\": int, \"name\": str, \"ports\": [...]}" % (item,))
            if pattern.startswith("*.") and "*" not in pattern[2:] and pattern[2:]:
                self.wild.setdefault(pattern[2:], []).append((entry, pattern, ports))
            elif "*" in pattern or not pattern:
                raise DomainsError("domain %r: a wildcard is allowed only as the whole first label (*.example.com)"
                                   % (item.get("name"),))
            else:
                self.exact.setdefault(pattern, []).append((entry, pattern, ports))

    def __len__(self):
        return sum(len(v) for v in self.exact.values()) + sum(len(v) for v in self.wild.values())

    def match(self, name):
        name = normal(name)
        found = list(self.exact.get(name, ()))
        labels = name.split(".")
        for i in range(1, len(labels)):
            if labels[i - 1]:   # what comes before the suffix ends in a label (as og_netpolicy.matches says)
                found.extend(self.wild.get(".".join(labels[i:]), ()))
        return found


def load_domains(path):
    """The Matcher of a domains file {"revision": int, "domains": [...]}."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DomainsError("cannot read the domains file %s: %s" % (path, exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("domains", []), list):
        raise DomainsError("the domains file %s must hold {\"revision\": int, \"domains\": [...]}" % path)
    return Matcher(data.get("domains", []), int(data.get("revision", 0) or 0))
