"""The server's background threads, started and stopped together: the hub, the housekeeper, the resolver."""

from __future__ import annotations


class Background:
    """Starts the hub (it releases this replica's old sessions first), the housekeeper and the resolver."""

    def __init__(self, hub, housekeeper, resolver):
        self.hub = hub
        self.housekeeper = housekeeper
        self.resolver = resolver

    def start(self):
        self.hub.start()
        self.housekeeper.start()
        self.resolver.start()

    def stop(self):
        """Stop the hub (its sessions close and their last states are written), the housekeeper, then the
        resolver (releasing its lease at once)."""
        self.hub.stop()
        self.housekeeper.stop()
        self.resolver.stop()
