"""The domains file: the server's domain entries (a domains frame, docs/protocol.md) for the gateway's DNS
forwarder og-dns, which reloads it when it changes (docs/dns.md).

Written atomically (a temporary file in the same directory, then os.replace) and only when its content changes;
never deleted: across agent restarts and while no server answers, og-dns keeps matching what was last written
(fail-static)."""

from __future__ import annotations

import json
import logging
import os
import tempfile

log = logging.getLogger("og.agent")


class DomainsFile:
    """The file at `path` (agent.yml dns_domains_file); `write(frame)` puts an og_protocol.Domains frame in it."""

    def __init__(self, path):
        self.path = path
        self.written = self._read()   # what the file holds: a restart rewrites nothing that did not change
        self.writes = 0

    def _read(self):
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def write(self, frame):
        """Write the frame's domains unless the file holds them already; True when written."""
        content = frame.to_file()
        if content == self.written:
            log.info("domains file %s holds the %d domain entries of revision %d already", self.path,
                     len(content["domains"]), content["revision"])
            return False
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".domains-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(content, fh, separators=(",", ":"))
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)   # og-dns runs as a user of its own and reads it
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.written = content
        self.writes += 1
        log.info("domains file %s written: %d domain entries at revision %d", self.path, len(content["domains"]),
                 content["revision"])
        return True
