"""Prometheus metrics, read from the kernel at scrape time; /healthz for client route daemons.

The per-address families (outputGuard's, per element, per entry, denied destinations) are written as exposition
text directly: at 100,000 addresses prometheus_client's Sample objects and per-sample validation and escaping
made a scrape take ~10 s. The other families go through prometheus_client as usual.

A scrape reads the kernel's counters itself while that read is quick (under SLOW_READ); once it is slower (tens of
thousands of addresses), a background reader reads them every REFRESH_EVERY seconds while scrapes come, and a
scrape serves the latest read: og_gateway_counters_age_seconds says how old it is (docs/metrics.md, "How fresh").
"""

from __future__ import annotations

import heapq
import http.server
import logging
import operator
import threading
import time

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from og_kernel.og_command import CommandError
from og_kernel.og_elements import Element
from og_kernel.og_firewall import Counters
from og_kernel import og_webconfig

# Joins the names of the entries that share an element into one `entry` label (no entry name contains it).
SHARED_JOIN = " + "
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ADDRESS_LIMIT = 1000   # default metrics_address_limit: addresses with series of their own (docs/metrics.md)
ENTRY_LIMIT = 1000     # default metrics_entry_limit: entries (and groups of entries) with series of their own
FIELD = tuple(map(operator.itemgetter, range(4)))  # the fields of Counters (a tuple), by position
THIRD = operator.itemgetter(2)
OTHER = "other"        # the address (and entry) label of the series that sum up all other addresses (entries)
# A read of the counters slower than this is left to the background reader (100,000 addresses take about 1 s).
SLOW_READ = 0.25
REFRESH_EVERY = 10.0   # seconds between the background reader's reads while scrapes come
MAX_AGE = 30.0         # a scrape reads the kernel itself rather than serve counters older than this
IDLE_AFTER = 300.0     # the background reader pauses when no scrape came for this long

log = logging.getLogger(__name__)


def escape_label(value):
    """A label value as the text exposition format wants it (backslash, double quote and newline escaped)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def ip_label(element):
    """outputGuard's `ip` label: the bare address of a /32 or /128, else the network; then the port if scoped.

    Canonical element texts need no parsing: an IPv4 host ends in /32, an IPv6 host in /128.
    """
    net = element[0]
    if net.endswith("/128") or (net.endswith("/32") and ":" not in net):
        net = net[:net.rindex("/")]
    return net if element[1] is None else "%s %s" % (net, element[1])


def _header(name, kind, text):
    return "# HELP %s %s\n# TYPE %s %s\n" % (name, text, name, kind)


class AgentMetrics:
    """The agent's /metrics body: counters read when Prometheus scrapes while that is quick, else at most
    REFRESH_EVERY (plus a read) old, from the background reader."""

    def __init__(self, agent, hostname):
        self.agent = agent
        self.hostname = hostname
        self.histogram = {"buckets": [0] * len(BUCKETS), "count": 0, "sum": 0.0}
        # The agent's elements parsed, sorted, with their `ip` labels: reused while the allowlist stays the same
        # (the common case between scrapes), so a scrape neither parses nor sorts 100,000 texts again.
        self._parsed = {}
        self._ordered = []
        self._labelled = []
        self._revision = None  # the agent's revision and names dict when they were last copied (_names)
        self._names_of = None
        self._names = {}
        self._reading = threading.Lock()  # one read of the kernel at a time: they share the caches above
        self.counted = None               # the latest read (Counted), served by scrapes while reads are slow
        self.last_scrape = None           # monotonic time of the latest scrape: the background reader's cue

    def _elements(self, texts):
        """The agent's elements parsed and sorted by text; parsed again only when the allowlist changed."""
        parsed = self._parsed
        if len(texts) != len(parsed) or not all(map(parsed.__contains__, texts)):
            self._parsed = parsed = {t: parsed.get(t) or Element.parse(t) for t in texts}
            self._ordered = sorted(parsed.values(), key=lambda e: e.text)
            self._labelled = [(e, ip_label(e), e.text) for e in self._ordered]
        return self._ordered

    def read(self, since=None):
        """Read the counters from the kernel and render their families, kept for scrapes; a read that started at
        or after `since` (monotonic) while this one waited for it is used instead. Raises CommandError."""
        agent = self.agent
        with self._reading:
            if since is not None and self.counted is not None and self.counted.read_at >= since:
                return self.counted
            started = time.monotonic()
            # Under the agent's lock (deltas wait for it) only C-level copies, and only after a change: a delta
            # moves the revision, a snapshot (also one at the same revision) brings a new names dict.
            with agent.lock:
                changed = agent.revision != self._revision or agent.names is not self._names_of
                if changed:
                    texts, names, revision, names_of = set(agent.elements), dict(agent.names), agent.revision, \
                        agent.names
            if changed:  # the caches move on only once the copies are parsed
                self._elements(texts)
                self._names, self._revision, self._names_of = names, revision, names_of
            ordered, names = self._ordered, self._names
            # The kernel is read without the agent's lock: a delta does not wait for 100,000 counters.
            counters = agent.fw.counters(ordered)
            denied = agent.fw.denied()
            # Rows of (ip label, element text, Counters): the elements the agent expects first, in order; then any
            # the kernel holds that the agent does not (drift).
            get = counters.get
            rows = [(ip, text, c) for e, ip, text in self._labelled if (c := get(e)) is not None]
            if len(rows) != len(counters):
                known = set(ordered)
                rows += [(ip_label(e), e.text, c) for e, c in sorted(counters.items(), key=lambda item: item[0].text)
                         if e not in known]
            parts = self._per_address(rows)
            parts += self._per_entry(rows, names)
            parts += self._denied(denied)
            self.counted = Counted(started, time.monotonic() - started, "".join(parts), len(counters))
            return self.counted

    def render(self, background=False):
        """The whole exposition text (bytes) of one scrape; raises CommandError when the kernel cannot be read.

        background: the HTTP handler's scrape, which serves the background reader's latest read when reads are
        slow (SLOW_READ) and it is at most MAX_AGE old; otherwise (and always without it) the kernel is read now.
        """
        now = time.monotonic()
        self.last_scrape = now
        counted = self.counted
        if not background or counted is None or counted.took < SLOW_READ:
            counted = self.read(since=now)
        elif now - counted.read_at > MAX_AGE:
            counted = self.read(since=now - MAX_AGE)
        rejected = self.agent.fw.rejected()
        age = max(0.0, time.monotonic() - counted.read_at)
        families = _Families(self._scalar_families(rejected, counted.allowed, age))
        return (counted.text + generate_latest(families).decode()).encode()

    def refresh_loop(self, stop):
        """Read the counters every REFRESH_EVERY seconds while reads are slow and scrapes come, until stop is set."""
        while not stop.wait(REFRESH_EVERY):
            counted, last = self.counted, self.last_scrape
            if counted is None or counted.took < SLOW_READ or last is None or time.monotonic() - last > IDLE_AFTER:
                continue  # quick reads are done by the scrape itself; nobody scraping: nothing to keep fresh
            try:
                self.read()
            except CommandError as exc:  # the next scrape reads (and reports 503) once the last read is too old
                log.warning("counters not read for /metrics: %s; trying again in %.0fs", exc.msg, REFRESH_EVERY)
            except Exception:  # noqa: BLE001 - the reader must outlive any one failure
                log.exception("counters reader crashed; trying again in %.0fs", REFRESH_EVERY)

    def _busiest(self, rows):
        """The rows of the busiest addresses (bytes both ways; the first in text order on a tie), at most the
        limit, in text order, then one row summing up all the others; and how many that row sums up."""
        limit = self.address_limit
        if len(rows) <= limit:
            return rows, 0
        counters = list(map(THIRD, rows))
        # Counters are tuples (out bytes, out packets, in bytes, in packets): columns summed by loops in C (not
        # zip(*counters), whose 100,000 arguments cost more than the sums).
        busy = list(map(operator.add, map(FIELD[0], counters), map(FIELD[2], counters)))
        # nlargest is stable: on a tie the earlier row (text order) wins.
        chosen = sorted(heapq.nlargest(limit, range(len(rows)), key=busy.__getitem__))
        kept = [counters[i] for i in chosen]
        totals = [sum(map(get, counters)) - sum(map(get, kept)) for get in FIELD]
        return [rows[i] for i in chosen] + [(OTHER, OTHER, Counters(*totals))], len(rows) - len(chosen)

    @property
    def address_limit(self):
        cfg = getattr(self.agent, "cfg", None) or {}
        return int(cfg.get("metrics_address_limit", ADDRESS_LIMIT))

    @property
    def entry_limit(self):
        cfg = getattr(self.agent, "cfg", None) or {}
        return int(cfg.get("metrics_entry_limit", ENTRY_LIMIT))

    def _per_address(self, rows):
        """The per-address families, with series of their own for the busiest addresses only (the limit)."""
        rows, aggregated = self._busiest(rows)
        prefix = 'hostname="%s",ip="' % escape_label(self.hostname)
        labelled = [(prefix + ip, text, c) for ip, text, c in rows]
        parts = [_header("iptables_bytes_count", "gauge", "Bytes per allowed address (outputGuard-compatible)")]
        parts += ['iptables_bytes_count{%s",type="OUTPUT"} %d\niptables_bytes_count{%s",type="INPUT"} %d\n'
                  % (ip, c.out_bytes, ip, c.in_bytes) for ip, _text, c in labelled]
        parts.append(_header("iptables_packets_count", "gauge", "Packets per allowed address (outputGuard-compatible)"))
        parts += ['iptables_packets_count{%s",type="OUTPUT"} %d\niptables_packets_count{%s",type="INPUT"} %d\n'
                  % (ip, c.out_packets, ip, c.in_packets) for ip, _text, c in labelled]
        parts.append(_header("og_gateway_bytes_total", "counter", "Bytes through the gateway per allowed element"))
        parts += ['og_gateway_bytes_total{address="%s",direction="out"} %d\n'
                  'og_gateway_bytes_total{address="%s",direction="in"} %d\n'
                  % (text, c.out_bytes, text, c.in_bytes) for _ip, text, c in labelled]
        parts.append(_header("og_gateway_packets_total", "counter",
                             "Packets through the gateway per allowed element"))
        parts += ['og_gateway_packets_total{address="%s",direction="out"} %d\n'
                  'og_gateway_packets_total{address="%s",direction="in"} %d\n'
                  % (text, c.out_packets, text, c.in_packets) for _ip, text, c in labelled]
        parts.append(_header("og_gateway_aggregated_addresses", "gauge",
                             "Allowed elements without series of their own, summed up as address=\"other\""))
        parts.append("og_gateway_aggregated_addresses %d\n" % aggregated)
        return parts

    def _per_entry(self, rows, names):
        """The sum over the elements an entry (a domain, an address, a network) produces, each element counted
        once: an element one entry produces goes to that entry's series (shared="false"); one that several
        entries produce goes to the series of that group of entries (entry="a + b", shared="true"), so that
        sum() over the family never counts a byte twice (docs/metrics.md)."""
        # Key: the entry's name (one holder) or the sorted tuple of names (a group): a str and a tuple never
        # collide. The value is the first element's Counters itself until a second element adds to it.
        per_entry = {}
        groups = set()
        entry_get = per_entry.get
        names_get = names.get
        add = operator.add
        for _ip, text, c in rows:
            holders = names_get(text)
            if holders:
                if len(holders) == 1:
                    key = holders[0]
                else:
                    key = tuple(sorted(holders))
                    groups.add(key)
                total = entry_get(key)
                per_entry[key] = c if total is None else tuple(map(add, total, c))
        # Entries appear in the order of their first element, which is sorted: stable without sorting again.
        items, aggregated = self._busiest_entries(per_entry, groups)
        # One look at all names together spares 100,000 calls of escape_label() when none needs escaping (the rule).
        joined = "".join(name for (name, _shared), _t in items)
        if '"' in joined or "\\" in joined or "\n" in joined:
            totals = [(escape_label(name), shared, t) for (name, shared), t in items]
        else:
            totals = [(name, shared, t) for (name, shared), t in items]
        parts = [_header("og_gateway_entry_bytes_total", "counter",
                         "Bytes through the gateway per allowlist entry; shared=true: elements several entries "
                         "produce, per group of entries")]
        parts += ['og_gateway_entry_bytes_total{direction="out",entry="%s",shared="%s"} %d\n'
                  'og_gateway_entry_bytes_total{direction="in",entry="%s",shared="%s"} %d\n'
                  % (n, sh, t[0], n, sh, t[2]) for n, sh, t in totals]
        parts.append(_header("og_gateway_entry_packets_total", "counter",
                             "Packets through the gateway per allowlist entry; shared=true: elements several "
                             "entries produce, per group of entries"))
        parts += ['og_gateway_entry_packets_total{direction="out",entry="%s",shared="%s"} %d\n'
                  'og_gateway_entry_packets_total{direction="in",entry="%s",shared="%s"} %d\n'
                  % (n, sh, t[1], n, sh, t[3]) for n, sh, t in totals]
        parts.append(_header("og_gateway_aggregated_entries", "gauge",
                             "Entries and groups of entries without series of their own, summed up as "
                             "entry=\"other\""))
        parts.append("og_gateway_aggregated_entries %d\n" % aggregated)
        return parts

    def _busiest_entries(self, per_entry, groups):
        """[((entry label, shared), totals)] of the busiest entries and groups (bytes both ways; the first in order
        on a tie), at most the limit, in their order; then the others summed up as entry="other", one series for
        single entries (shared="false") and one for groups (shared="true"), so sum() still counts each byte once
        and sum by (shared) still splits it; and how many the two sum up. Only the chosen keys get labels."""
        keys = list(per_entry)
        totals = list(per_entry.values())
        limit = self.entry_limit
        aggregated = max(0, len(keys) - limit)
        if aggregated:
            busy = list(map(operator.add, map(FIELD[0], totals), map(FIELD[2], totals)))
            # nlargest is stable: on a tie the earlier entry wins.
            chosen = sorted(heapq.nlargest(limit, range(len(keys)), key=busy.__getitem__))
        else:
            chosen = range(len(keys))
        items = [((keys[i], "false") if keys[i].__class__ is str else (SHARED_JOIN.join(keys[i]), "true"), totals[i])
                 for i in chosen]
        if not aggregated:
            return items, 0
        grouped = [per_entry[key] for key in groups]
        kept_single = [t for (_name, shared), t in items if shared == "false"]
        kept_grouped = [t for (_name, shared), t in items if shared == "true"]
        # Single entries carry everything but the groups' traffic; the other series, what the chosen do not carry.
        rest_single = [sum(map(get, totals)) - sum(map(get, grouped)) - sum(map(get, kept_single)) for get in FIELD]
        rest_grouped = [sum(map(get, grouped)) - sum(map(get, kept_grouped)) for get in FIELD]
        return items + [((OTHER, "false"), rest_single), ((OTHER, "true"), rest_grouped)], aggregated

    def _denied(self, denied):
        rows = sorted(denied.items())
        parts = [_header("og_gateway_denied_packets_total", "counter",
                         "New connection attempts from clients refused, per destination (forgotten an hour "
                         "after the last attempt)")]
        parts += ['og_gateway_denied_packets_total{address="%s"} %d\n' % (a, pb[0]) for a, pb in rows]
        parts.append(_header("og_gateway_denied_bytes_total", "counter",
                             "Bytes of the refused new connection attempts, per destination"))
        parts += ['og_gateway_denied_bytes_total{address="%s"} %d\n' % (a, pb[1]) for a, pb in rows]
        return parts

    def _scalar_families(self, rejected, allowed, age):
        """The families of one value each (and the histogram), through prometheus_client."""
        agent = self.agent
        yield GaugeMetricFamily("og_gateway_counters_age_seconds",
                                "Seconds since the per-address, per-entry and denied series were read from the kernel",
                                value=age)
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
        yield GaugeMetricFamily("og_gateway_allowed_elements", "Allowed elements in the kernel", value=allowed)
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
        # Per-client traffic goes to the server only (a series per client address would be unbounded here); these
        # say, as of the last counters cycle, how many clients are counted and whether some are not.
        yield GaugeMetricFamily("og_gateway_clients_counted",
                                "Client addresses in the per-client traffic sets at the last counters cycle",
                                value=agent.stats.clients_counted)
        yield GaugeMetricFamily("og_gateway_client_sets_full",
                                "Per-client traffic sets full at the last counters cycle (new clients not counted)",
                                value=agent.stats.client_sets_full)
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


class Counted:
    """One read of the kernel's counters: when it started and took (monotonic seconds), its rendered families."""

    __slots__ = ("read_at", "took", "text", "allowed")

    def __init__(self, read_at, took, text, allowed):
        self.read_at, self.took, self.text, self.allowed = read_at, took, text, allowed


class _Families:
    """What generate_latest() reads: an object whose collect() yields metric families."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def serve(agent, listen, hostname, web_config=None):
    """Serve /metrics and /healthz on a background thread; return the server.

    web_config: an og_webconfig.WebConfig (node_exporter's shape: TLS, basic auth), None for plain HTTP.
    """
    metrics = AgentMetrics(agent, hostname)
    scrape_lock = threading.Lock()  # one scrape at a time: they share AgentMetrics' caches and histogram

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                try:
                    with scrape_lock:
                        body = metrics.render(background=True)
                    status, ctype = 200, CONTENT_TYPE_LATEST
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

    host, _colon, port = listen.rpartition(":")
    server = og_webconfig.serve(host.strip("[]"), port, Handler, web_config, name="og-metrics")
    server.reader_stop = threading.Event()  # set to stop the background reader (the agent's threads are daemons)
    threading.Thread(target=metrics.refresh_loop, args=(server.reader_stop,), name="og-metrics-reader",
                     daemon=True).start()
    return server
