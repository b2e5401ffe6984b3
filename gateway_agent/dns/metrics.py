"""og-dns's Prometheus metrics, in a registry of its own, served on metrics_listen with /healthz beside them.

/healthz is what og-route probes when the clients resolve through the gateways' og-dns (the route role's
og_route_dns): 200 "ok" when og-dns listens and its learn sets can be read, 503 with the reason otherwise.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, MetricsHandler
from prometheus_client.core import GaugeMetricFamily

from og_kernel import og_webconfig

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics(object):
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.queries = Counter("og_dns_queries", "Queries received from clients", ["transport"], registry=r)
        self.responses = Counter("og_dns_responses", "Responses sent to clients", ["rcode"], registry=r)
        self.learned = Counter("og_dns_learned", "Addresses learned or refreshed (one per address, entry and "
                               "name of an answer)", registry=r)
        self.learned_addresses = Gauge("og_dns_learned_addresses", "Learned addresses still live", registry=r)
        self.expired = Counter("og_dns_expired", "Learned addresses whose timeout passed", registry=r)
        self.withdrawn = Counter("og_dns_withdrawn", "Learned addresses (one per address and port or port range) "
                                 "removed at once because their entry was deleted, changed its ports or no longer "
                                 "matches the name", registry=r)
        self.added_latency = Histogram("og_dns_added_latency_seconds", "Time og-dns adds to a query: its whole "
                                       "handling minus the upstream round trip", buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram("og_dns_upstream_duration_seconds", "Upstream round trip",
                                           buckets=UPSTREAM_BUCKETS, registry=r)
        self.upstream_errors = Counter("og_dns_upstream_errors", "Upstream failures and timeouts", ["upstream"],
                                       registry=r)
        self.caps_hit = Counter("og_dns_caps_hit", "Addresses not learned because a cap was reached", ["kind"],
                                registry=r)
        self.refused_internal = Counter("og_dns_refused_internal", "Answer addresses not learned because they "
                                        "are internal", registry=r)
        self.unlisted = Counter("og_dns_unlisted", "Queries for names of no domain entry", registry=r)
        self.learn_errors = Counter("og_dns_learn_errors", "Adds the kernel learn sets refused", registry=r)
        self.spool_files = Counter("og_dns_spool_files", "Spool files written", registry=r)
        self.spool_errors = Counter("og_dns_spool_errors", "Spool writes that failed (kept, tried again)",
                                    registry=r)
        self.spool_dropped = Counter("og_dns_spool_dropped", "Oldest spool files removed beyond spool_max_files",
                                     registry=r)
        self.domains = Gauge("og_dns_domains", "Domain patterns loaded from the domains file", registry=r)

    def per_entry(self, counts):
        """Serve og_dns_entry_learned_addresses{entry} from counts(), a {entry id: live addresses} read at scrape."""
        self.registry.register(_PerEntry(counts))

    def serve(self, host, port, web_config=None, health=None):
        """/metrics and /healthz on host:port from a daemon thread; with web_config (og_webconfig.WebConfig) over
        TLS and/or behind basic auth, as the agent's and og-route's (/healthz stays open, og_webconfig.OPEN_PATHS).

        health: a callable returning (ok, reason) for /healthz; None answers 503 "no health check".
        """
        return og_webconfig.serve(host, port, health_handler(MetricsHandler.factory(self.registry), health),
                                  web_config, name="og-dns-metrics")


def health_handler(metrics_handler, health):
    """metrics_handler (prometheus_client's MetricsHandler class) with GET /healthz answered by health()."""

    class Handler(metrics_handler):
        def do_GET(self):
            if self.path.split("?", 1)[0] != "/healthz":
                return super(Handler, self).do_GET()
            ok, reason = health() if health is not None else (False, "no health check")
            body = ("ok\n" if ok else "%s\n" % reason).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _PerEntry(object):
    """The per-entry family, computed at scrape time (nothing to keep in step on the query path)."""

    def __init__(self, counts):
        self.counts = counts

    def collect(self):
        family = GaugeMetricFamily("og_dns_entry_learned_addresses", "Learned addresses live per domain entry "
                                   "(label entry: its id, as in the API)", labels=["entry"])
        for entry, count in sorted(self.counts().items()):
            family.add_metric([str(entry)], count)
        yield family
