"""og-route: keep every public range routed to the outputguard.egress gateways, with failover."""
