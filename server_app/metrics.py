"""/metrics for the server itself: entries, revision, gateways connected and lagging, publish latency, the DNS
forwarders' unlisted names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from .extensions import db
from .models import Entry, Gateway, utcnow
from .services import changelog, gateways as gateway_sessions, unlisted

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerCollector:
    def __init__(self, app):
        self.app = app

    def collect(self):
        with self.app.app_context():
            try:
                kinds = dict(db.session.execute(select(Entry.kind, func.count()).group_by(Entry.kind)).all())
                capped = db.session.execute(select(func.count()).where(Entry.capped.is_(True))).scalar_one()
                failing = db.session.execute(select(func.count()).where(Entry.kind == "domain",
                                                                        Entry.resolve_error != "")).scalar_one()
                head = changelog.head_revision()
                gws = db.session.execute(select(Gateway.connected, Gateway.last_seen, Gateway.applied_revision,
                                                Gateway.digest_match)).all()
                unlisted_rows = unlisted.count_rows()
            finally:
                db.session.remove()
        entries = GaugeMetricFamily("og_server_entries", "Allowlist entries by kind", labels=["kind"])
        for kind in ("ip", "cidr", "domain"):
            entries.add_metric([kind], kinds.get(kind, 0))
        yield entries
        yield GaugeMetricFamily("og_server_revision", "Head revision of the change log", value=head)
        yield GaugeMetricFamily("og_server_entries_capped", "Domain entries holding the most addresses allowed",
                                value=capped)
        yield GaugeMetricFamily("og_server_entries_resolve_failing", "Domain entries whose last resolution failed",
                                value=failing)
        now = utcnow()
        connected = [g for g in gws if gateway_sessions.connected(g, now)]
        yield GaugeMetricFamily("og_server_gateways", "Known gateways", value=len(gws))
        yield GaugeMetricFamily("og_server_gateways_connected", "Gateways connected now", value=len(connected))
        yield GaugeMetricFamily("og_server_gateways_lagging", "Connected gateways not at the head revision",
                                value=sum(1 for g in connected if g.applied_revision < head))
        yield GaugeMetricFamily("og_server_gateways_digest_mismatch",
                                "Connected gateways at the head whose digest differs from the desired set",
                                value=sum(1 for g in connected if g.applied_revision == head and not g.digest_match))
        yield GaugeMetricFamily("og_server_dns_unlisted_names",
                                "Rows of (gateway, name) no entry allows in the unlisted table (docs/dns.md)",
                                value=unlisted_rows)
        stats = self.app.extensions.get("og_resolver_stats") or {}
        yield CounterMetricFamily("og_server_resolver_runs", "Resolver passes", value=stats.get("runs", 0))
        yield CounterMetricFamily("og_server_resolver_errors", "Failed resolutions and failed passes",
                                  value=stats.get("errors", 0))
        yield CounterMetricFamily("og_server_resolver_names", "Names resolved", value=stats.get("names", 0))
        yield CounterMetricFamily("og_server_resolver_addresses_added", "Addresses published by the resolver",
                                  value=stats.get("added", 0))
        yield CounterMetricFamily("og_server_resolver_addresses_removed",
                                  "Addresses removed by the resolver after their grace period",
                                  value=stats.get("removed", 0))
        yield GaugeMetricFamily("og_server_resolver_leader", "1 if this replica holds the resolver lease",
                                value=1 if stats.get("leader") else 0)
        yield GaugeMetricFamily("og_server_resolver_last_success_timestamp_seconds",
                                "Unix time of the last completed resolver pass", value=stats.get("last_success") or 0)
        yield GaugeMetricFamily("og_server_resolver_last_duration_seconds", "Duration of the last resolver pass",
                                value=stats.get("last_duration", 0.0))


def install(app):
    registry = CollectorRegistry()
    registry.register(ServerCollector(app))
    app.extensions["og_publish_latency"] = Histogram(
        "og_server_publish_latency_seconds", "From commit of a revision to a gateway's ack of it",
        buckets=BUCKETS, registry=registry)
    app.extensions["og_snapshots_sent"] = Counter(
        "og_server_snapshots_sent", "Full snapshots sent to a gateway by this replica, by why (docs/protocol.md)",
        ["gateway", "reason"], registry=registry)
    # Per gateway, never per name: the names are in GET /api/v1/dns/unlisted.
    app.extensions["og_unlisted_queries"] = Counter(
        "og_server_dns_unlisted_queries", "Queries for names no entry allows, reported by each gateway's og-dns and "
        "stored by this replica", ["gateway"], registry=registry)
    app.extensions["og_unlisted_pruned"] = Counter(
        "og_server_dns_unlisted_pruned", "Unlisted-name rows deleted by this replica's housekeeper, by why "
        "(retention, cap)", ["reason"], registry=registry)

    @app.get("/metrics")
    def metrics():
        return generate_latest(registry), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
