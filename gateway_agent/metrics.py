"""Prometheus metrics, read from the kernel at scrape time; /healthz for client route daemons."""

from __future__ import annotations

import http.server
import socketserver
import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from og_kernel.og_command import CommandError
from og_kernel.og_elements import Element

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _ip_label(element):
    net = element.network
    text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return text if element.port is None else "%s %s" % (text, element.port)


class AgentCollector:
    """Computes every series when Prometheus scrapes, so counters are never one scrape late."""

    def __init__(self, agent, hostname):
        self.agent = agent
        self.hostname = hostname
        self.histogram = {"buckets": [0] * len(BUCKETS), "count": 0, "sum": 0.0}

    def collect(self):
        agent = self.agent
        with agent.lock:
            expected = [Element.parse(e) for e in agent.elements]
            counters = agent.fw.counters(expected)
            rejected = agent.fw.rejected()
            names = dict(agent.names)
        seed_bytes = GaugeMetricFamily("iptables_bytes_count", "Bytes per allowed address (seed-compatible)",
                                       labels=["ip", "type", "hostname"])
        seed_packets = GaugeMetricFamily("iptables_packets_count", "Packets per allowed address (seed-compatible)",
                                         labels=["ip", "type", "hostname"])
        og_bytes = CounterMetricFamily("og_gateway_bytes", "Bytes through the gateway per allowed element",
                                       labels=["address", "direction"])
        og_packets = CounterMetricFamily("og_gateway_packets", "Packets through the gateway per allowed element",
                                         labels=["address", "direction"])
        per_entry = {}
        for element, c in sorted(counters.items(), key=lambda item: item[0].text):
            ip = _ip_label(element)
            seed_bytes.add_metric([ip, "OUTPUT", self.hostname], c.out_bytes)
            seed_bytes.add_metric([ip, "INPUT", self.hostname], c.in_bytes)
            seed_packets.add_metric([ip, "OUTPUT", self.hostname], c.out_packets)
            seed_packets.add_metric([ip, "INPUT", self.hostname], c.in_packets)
            og_bytes.add_metric([element.text, "out"], c.out_bytes)
            og_bytes.add_metric([element.text, "in"], c.in_bytes)
            og_packets.add_metric([element.text, "out"], c.out_packets)
            og_packets.add_metric([element.text, "in"], c.in_packets)
            for name in names.get(element.text, ()):
                total = per_entry.setdefault(name, [0, 0, 0, 0])
                total[0] += c.out_bytes
                total[1] += c.in_bytes
                total[2] += c.out_packets
                total[3] += c.in_packets
        yield seed_bytes
        yield seed_packets
        yield og_bytes
        yield og_packets
        # Per entry: the sum over the elements an entry (a domain, an address, a network) produces. An element
        # that two entries produce counts for both.
        entry_bytes = CounterMetricFamily("og_gateway_entry_bytes", "Bytes through the gateway per allowlist entry",
                                          labels=["entry", "direction"])
        entry_packets = CounterMetricFamily("og_gateway_entry_packets",
                                            "Packets through the gateway per allowlist entry",
                                            labels=["entry", "direction"])
        for name, (ob, ib, op, ip_) in sorted(per_entry.items()):
            entry_bytes.add_metric([name, "out"], ob)
            entry_bytes.add_metric([name, "in"], ib)
            entry_packets.add_metric([name, "out"], op)
            entry_packets.add_metric([name, "in"], ip_)
        yield entry_bytes
        yield entry_packets
        yield CounterMetricFamily("og_gateway_rejected_packets", "Packets from clients to destinations not allowed",
                                  value=rejected[0])
        yield GaugeMetricFamily("og_gateway_applied_revision", "Revision of the applied allowlist",
                                value=agent.revision)
        yield GaugeMetricFamily("og_gateway_server_revision", "Newest revision a server announced",
                                value=agent.stats.server_revision)
        yield GaugeMetricFamily("og_gateway_lag_revisions", "Revisions announced by the server but not yet applied",
                                value=max(0, agent.stats.server_revision - agent.revision))
        yield GaugeMetricFamily("og_gateway_last_contact_timestamp_seconds",
                                "Unix time of the last frame from a server (0: never)",
                                value=agent.stats.last_contact)
        yield GaugeMetricFamily("og_gateway_connected", "1 while connected to a server",
                                value=1 if agent.stats.connected else 0)
        yield CounterMetricFamily("og_gateway_reconnects", "Connections to a server that ended",
                                  value=agent.stats.reconnects)
        yield GaugeMetricFamily("og_gateway_allowed_elements", "Allowed elements in the kernel", value=len(counters))
        skipped = CounterMetricFamily("og_gateway_skipped_elements",
                                      "Elements from the server not put in the kernel (defence in depth)",
                                      labels=["reason"])
        for reason, count in sorted(agent.stats.skipped.items()):
            skipped.add_metric([reason], count)
        yield skipped
        yield CounterMetricFamily("og_gateway_bad_frames", "Server frames that broke the protocol (connection closed)",
                                  value=agent.stats.bad_frames)
        yield CounterMetricFamily("og_gateway_connections_cut",
                                  "Established client connections cut because their destination was removed",
                                  value=agent.stats.connections_cut)
        yield CounterMetricFamily("og_gateway_drift_repairs", "Times the kernel state was repaired",
                                  value=agent.stats.drift_repairs)
        yield self._apply_histogram()

    def _apply_histogram(self):
        h = self.histogram
        while self.agent.stats.apply_seconds:
            value = self.agent.stats.apply_seconds.pop()
            h["count"] += 1
            h["sum"] += value
            for i, bound in enumerate(BUCKETS):
                if value <= bound:
                    h["buckets"][i] += 1
        buckets = [(str(b), n) for b, n in zip(BUCKETS, h["buckets"])] + [("+Inf", h["count"])]
        metric = HistogramMetricFamily("og_gateway_apply_duration_seconds", "Time to apply a snapshot or delta")
        metric.add_metric([], buckets, h["sum"])
        return metric


def serve(agent, listen, hostname):
    """Serve /metrics and /healthz on a background thread; return the server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, hostname))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                try:
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                except CommandError as exc:  # the kernel could not be read: say so instead of dropping the socket
                    body, status, ctype = ("cannot read the kernel: %s\n" % exc.msg).encode(), 503, "text/plain"
            elif self.path == "/healthz":
                ok = agent.stats.policy_ok
                body, status, ctype = (b"ok\n" if ok else b"policy not in place\n"), (200 if ok else 503), "text/plain"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    host, _, port = listen.rpartition(":")
    server = Server((host.strip("[]"), int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="og-metrics", daemon=True).start()
    return server
