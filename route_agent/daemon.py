"""The route daemon: reconcile our routes with the healthy gateways, on a timer and on netlink events.

In failover mode the healthy gateways get the lowest metrics in their configured order, so the kernel uses the
first healthy one; in ECMP mode only healthy gateways are next hops. When no gateway answers, all keep their
routes (fail static): a broken health endpoint must not take the routes away. A gateway is declared down after
`fall` failed probes in a row and up again after `rise` good ones, so one lost probe does not move the traffic
(moving it breaks the NATed connections of every client).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import http.server
import ipaddress
import logging
import os
import select
import ssl
import threading
import time
import urllib.error
import urllib.request

from og_kernel.og_routes import RouteTable, desired_routes, plan, route_line
from og_kernel import og_webconfig

log = logging.getLogger("og.route")


def health_context(ca_file):
    """The SSLContext og-route verifies the gateways' /healthz over TLS with: the chain must end at a CA in
    ca_file and the certificate must list the gateway's address (as probed), TLS 1.2 or newer. OSError or
    ssl.SSLError when ca_file cannot be read or holds no PEM certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Prober(object):
    """prober(gateway, port, timeout) for RouteDaemon: True when GET /healthz answers 200. Plain HTTP, or with
    ca_file HTTPS verified against that CA (the gateways' metrics behind a web config with TLS, docs/tls.md).
    Why a probe failed is logged once per gateway each time the reason changes, not at every probe."""

    def __init__(self, ca_file=""):
        self.ca_file = ca_file
        self.scheme = "https" if ca_file else "http"
        # No proxy from the environment: the health endpoint is on the LAN, a proxy would answer for a dead one.
        handlers = [urllib.request.ProxyHandler({})]
        if ca_file:
            handlers.append(urllib.request.HTTPSHandler(context=health_context(ca_file)))
        self.opener = urllib.request.build_opener(*handlers)
        self.reasons = {}

    def url(self, gateway, port):
        return "%s://%s:%d/healthz" % (self.scheme, "[%s]" % gateway if ":" in gateway else gateway, port)

    def __call__(self, gateway, port, timeout=1.0):
        url = self.url(gateway, port)
        try:
            with self.opener.open(url, timeout=timeout) as resp:
                ok, reason = resp.status == 200, "answered %d" % resp.status
        except urllib.error.HTTPError as exc:
            ok, reason = False, "answered %d" % exc.code
        except (OSError, ValueError, http.client.HTTPException) as exc:
            ok, reason = False, self.explain(gateway, exc)
        previous = self.reasons.get(gateway)
        self.reasons[gateway] = None if ok else reason
        if not ok and reason != previous:
            log.warning("health check %s failed: %s", url, reason)
        return ok

    def explain(self, gateway, exc):
        """One line naming why a probe of gateway failed and, where there is one, the fix."""
        cause = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str) else exc
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code in (62, 64):   # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
                return ("the gateway's certificate is not valid for %s (%s): give its metrics a certificate that "
                        "lists the address og-route probes (--gateway %s)" % (gateway, cause.verify_message, gateway))
            return ("the gateway's certificate is not trusted by the CA in --health-ca-file %s (%s): give the CA "
                    "that signed the gateways' metrics certificates" % (self.ca_file, cause.verify_message))
        if isinstance(cause, ssl.SSLError):
            return ("no TLS answer (%s): the gateway's metrics port speaks plain HTTP; drop --health-ca-file or "
                    "give the gateway's metrics a web config with tls_server_config" % (cause.reason or cause))
        if not self.ca_file and isinstance(cause, (http.client.HTTPException, ConnectionResetError)):
            return ("no HTTP answer (%s): if the gateway's metrics use TLS (a web config with tls_server_config), "
                    "give og-route --health-ca-file with their CA" % (cause.__class__.__name__,))
        return "%s" % (getattr(cause, "strerror", None) or cause)


probe = Prober()


class RouteDaemon(object):
    def __init__(self, gateways, mode="failover", internal_networks=(), exclude=(), ipv6=False, health_port=9900,
                 interval=1.0, fall=2, rise=2, table=None, prober=probe):
        self.gateways = list(gateways)
        self.mode = mode
        self.internal_networks = internal_networks
        self.exclude = list(exclude)
        self.pins = {str(n) for n in (ipaddress.ip_network(x, strict=False) for x in self.exclude)
                     if n.prefixlen == n.max_prefixlen}
        self.ipv6 = ipv6
        self.health_port = health_port
        self.interval = interval
        self.fall = fall
        self.rise = rise
        self.table = table or RouteTable()
        self.prober = prober
        self.stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self.healthy = {gw: True for gw in self.gateways}
        self._streak = {gw: 0 for gw in self.gateways}   # probes in a row that disagree with `healthy`
        self._probed = False
        self.active = None
        self._planned = None
        self.switches = 0
        self.repairs = 0
        self.routes = 0
        self.last_ok = 0.0
        self._http = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.gateways)))

    def request_stop(self):
        """Safe from a signal handler: the main loop wakes up at once."""
        self.stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def close(self):
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self._pool.shutdown(wait=False)
        self.table.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def check(self):
        self.table.check_gateways(self.gateways)

    def order(self):
        """Gateways in the order the routes should prefer them."""
        up = [g for g in self.gateways if self.healthy.get(g)]
        if not up:
            return list(self.gateways)
        if self.mode == "ecmp":
            return up
        return up + [g for g in self.gateways if g not in up]

    def desired(self):
        return desired_routes(self.order(), self.mode, self.internal_networks, self.exclude, self.ipv6)

    def reconcile(self):
        """Make the kernel's routes of ours equal to the plan; True when something had to change."""
        order = self.order()
        desired = self.desired()
        # A host route of ours for an excluded single address is the module's pin of the management path
        # (og_public_routes): it is left alone.
        current = {k: v for k, v in self.table.own_routes(ipv6=True).items() if k[0] not in self.pins}
        add, change, remove, _diff = plan(current, desired)
        if add or change or remove:
            started = time.monotonic()
            self.table.apply(add, change, remove, desired, current)
            repair = order == self._planned   # same plan as last time: someone or something changed the kernel
            log.info("routes %s: added %d, changed %d, removed %d in %.3fs (%d routes)",
                     "changed outside og-route were put right" if repair else "applied", len(add), len(change),
                     len(remove), time.monotonic() - started, len(desired))
            for key in (add + change)[:3]:
                log.debug("route %s", route_line(key, desired[key]))
            if repair:
                self.repairs += 1
        self.routes = len(desired)
        self._planned = order
        active = order[0] if order else None
        if active != self.active:
            if self.active is not None:
                self.switches += 1
                log.warning("traffic moved from gateway %s to %s", self.active, active)
            else:
                log.info("traffic goes to gateway %s", active)
            self.active = active
        self.last_ok = time.time()
        return bool(add or change or remove)

    def record(self, gw, ok):
        """Fold one probe result into the gateway's state (hysteresis: fall/rise probes in a row)."""
        if not self._probed:
            changed = ok != self.healthy.get(gw)
            self.healthy[gw] = ok
            self._streak[gw] = 0
        elif ok == self.healthy.get(gw):
            self._streak[gw] = 0
            changed = False
        else:
            self._streak[gw] += 1
            changed = self._streak[gw] >= (self.rise if ok else self.fall)
            if not changed:
                log.debug("gateway %s probe %s (%d of %d in a row)", gw, "answered" if ok else "failed",
                          self._streak[gw], self.rise if ok else self.fall)
            if changed:
                self.healthy[gw] = ok
                self._streak[gw] = 0
        if changed:
            log.warning("gateway %s is %s", gw, "up" if ok else "down")
        return changed

    def probe_all(self):
        """Probe every gateway at once; True when a gateway's state changed."""
        if not self.health_port:
            return False
        timeout = min(1.0, max(0.2, self.interval))
        results = list(self._pool.map(lambda gw: self.prober(gw, self.health_port, timeout), self.gateways))
        changed = [self.record(gw, ok) for gw, ok in zip(self.gateways, results)]
        self._probed = True
        if any(changed) and not any(self.healthy.values()):
            log.error("no gateway answers its health check; the routes stay as they are (fail static)")
        return any(changed)

    def _events(self):
        """A netlink socket subscribed to link, address and route changes, or None."""
        try:
            from pyroute2 import IPRoute
            from pyroute2.netlink import rtnl
            ipr = IPRoute()
            # Links, addresses and routes; not neighbours, whose churn on a busy LAN would mean useless dumps.
            ipr.bind(groups=rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR
                     | rtnl.RTMGRP_IPV4_ROUTE | rtnl.RTMGRP_IPV6_ROUTE)
            return ipr
        except Exception as exc:  # events are an optimisation; the timer still re-asserts
            log.warning("no netlink events (%s); re-checking every %.1fs", exc, self.interval)
            return None

    def _drain(self, events):
        """Read every pending netlink message; a burst of route changes becomes one reconcile."""
        for _attempt in range(1000):
            ready, _writable, _errors = select.select([events], [], [], 0)
            if not ready:
                return
            try:
                events.get()
            except Exception:
                return

    def run(self):
        events = self._events()
        watch = [self._wake_r] + ([events] if events is not None else [])
        next_probe = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.interval
                    self.probe_all()
                try:
                    self.reconcile()
                except Exception as exc:
                    log.error("could not apply the routes: %s; retrying", exc)
                    self.stop.wait(min(self.interval, 1.0))   # the undo's own events must not spin the loop
                wait = max(0.0, next_probe - time.monotonic())
                ready, _writable, _errors = select.select(watch, [], [], wait)
                if events is not None and events in ready:
                    time.sleep(0.02)   # let the rest of a burst (a link going down) arrive first
                    self._drain(events)
        finally:
            if events is not None:
                events.close()
        log.info("stopping; the routes stay as they are (fail static)")

    def health(self):
        """(ok, text) for /healthz: the routes were reconciled recently."""
        age = time.time() - self.last_ok
        limit = max(5.0, 3 * self.interval)
        if self.last_ok and age <= limit:
            return True, "ok: traffic goes to gateway %s\n" % self.active
        if not self.last_ok:
            return False, "routes not reconciled yet\n"
        return False, "routes not reconciled for %.0fs (limit %.0fs)\n" % (age, limit)

    def collector(self):
        """A Prometheus collector reading the daemon's state at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        daemon = self

        class Collector(object):
            def collect(self):
                up = GaugeMetricFamily("og_route_gateway_up", "Health check state per gateway (1 up, 0 down)",
                                       labels=["gateway"])
                active = GaugeMetricFamily("og_route_gateway_active", "1 for the gateway carrying the traffic",
                                           labels=["gateway"])
                for gw in daemon.gateways:
                    up.add_metric([gw], 1.0 if daemon.healthy.get(gw) else 0.0)
                    active.add_metric([gw], 1.0 if gw == daemon.active else 0.0)
                yield up
                yield active
                yield CounterMetricFamily("og_route_switches", "Times traffic moved to another gateway",
                                          value=daemon.switches)
                yield CounterMetricFamily("og_route_repairs", "Times the kernel's routes differed from the plan "
                                          "and were put right (not counting gateway switches)",
                                          value=daemon.repairs)
                yield GaugeMetricFamily("og_route_routes", "Routes of og-route in the kernel's main table",
                                        value=daemon.routes)
                yield GaugeMetricFamily("og_route_last_reconcile_timestamp_seconds",
                                        "When the routes were last found or made correct", value=daemon.last_ok)

        return Collector()

    def serve_metrics(self, listen, web_config=None):
        """Serve /metrics and /healthz on HOST:PORT in a background thread; web_config (og_webconfig.WebConfig):
        TLS and basic auth, None for plain HTTP."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(self.collector())
        daemon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
                elif self.path == "/healthz":
                    ok, text = daemon.health()
                    status, ctype, body = (200 if ok else 503), "text/plain; charset=utf-8", text.encode()
                else:
                    status, ctype, body = 404, "text/plain; charset=utf-8", b"try /metrics or /healthz\n"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        host, _colon, port = listen.rpartition(":")
        self._http = og_webconfig.serve(host.strip("[]") or "0.0.0.0", port, Handler, web_config,
                                        name="og-route-metrics")
        log.info("serving /metrics and /healthz on %s", listen)
