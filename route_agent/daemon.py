"""The route daemon: reconcile our routes with the healthy gateways, on a timer and on netlink events.

In failover mode the healthy gateways get the lowest metrics in their configured order, so the kernel uses the
first healthy one; in ECMP mode only healthy gateways are next hops. When no gateway answers, all keep their
routes (fail static): a broken health endpoint must not take the routes away.
"""

from __future__ import annotations

import logging
import select
import threading
import time
import urllib.request

from og_kernel.og_routes import RouteTable, desired_routes, plan, route_line

log = logging.getLogger("og.route")


def probe(gateway, port, timeout=1.0):
    """True when the gateway's health endpoint answers 200."""
    host = "[%s]" % gateway if ":" in gateway else gateway
    try:
        with urllib.request.urlopen("http://%s:%d/healthz" % (host, port), timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class RouteDaemon(object):
    def __init__(self, gateways, mode="failover", internal_networks=(), exclude=(), ipv6=False, health_port=9900,
                 interval=1.0, table=None, prober=probe):
        self.gateways = list(gateways)
        self.mode = mode
        self.internal_networks = internal_networks
        self.exclude = list(exclude)
        self.ipv6 = ipv6
        self.health_port = health_port
        self.interval = interval
        self.table = table or RouteTable()
        self.prober = prober
        self.stop = threading.Event()
        self.healthy = {gw: True for gw in self.gateways}
        self.active = None
        self.switches = 0
        self.reconciles = 0
        self.last_ok = 0.0

    def close(self):
        self.table.close()

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
        desired = self.desired()
        current = self.table.own_routes(ipv6=True)
        add, change, remove, _ = plan(current, desired)
        if add or change or remove:
            log.info("routes: %d to add, %d to change, %d to remove", len(add), len(change), len(remove))
            for key in add[:3] + change[:3]:
                log.debug("route %s", route_line(key, desired[key]))
            self.table.apply(add, change, remove, desired, current)
            self.reconciles += 1
        active = self.order()[0] if self.gateways else None
        if active != self.active:
            if self.active is not None:
                self.switches += 1
                log.warning("traffic moved from gateway %s to %s", self.active, active)
            else:
                log.info("traffic goes to gateway %s", active)
            self.active = active
        self.last_ok = time.time()
        return bool(add or change or remove)

    def probe_all(self):
        if not self.health_port:
            return
        for gw in self.gateways:
            ok = self.prober(gw, self.health_port)
            if ok != self.healthy.get(gw):
                log.warning("gateway %s is %s", gw, "up" if ok else "down")
            self.healthy[gw] = ok

    def _events(self):
        """A netlink socket subscribed to link, address and route changes, or None."""
        try:
            from pyroute2 import IPRoute
            ipr = IPRoute()
            ipr.bind()
            return ipr
        except Exception as exc:  # events are an optimisation; the timer still re-asserts
            log.warning("no netlink events (%s); re-checking every %.1fs", exc, self.interval)
            return None

    def run(self):
        events = self._events()
        try:
            while not self.stop.is_set():
                self.probe_all()
                try:
                    self.reconcile()
                except Exception as exc:
                    log.error("could not apply the routes: %s; retrying", exc)
                if events is not None:
                    ready, _, _ = select.select([events], [], [], self.interval)
                    if ready:
                        try:
                            events.get()   # drain; the next reconcile reads the kernel again
                        except Exception:
                            pass
                else:
                    self.stop.wait(self.interval)
        finally:
            if events is not None:
                events.close()

    def serve_metrics(self, listen):
        from prometheus_client import start_http_server
        from prometheus_client.core import REGISTRY, GaugeMetricFamily, CounterMetricFamily

        daemon = self

        class Collector(object):
            def collect(self):
                up = GaugeMetricFamily("og_route_gateway_up", "Health check result per gateway", labels=["gateway"])
                active = GaugeMetricFamily("og_route_gateway_active", "1 for the gateway carrying the traffic",
                                           labels=["gateway"])
                for gw in daemon.gateways:
                    up.add_metric([gw], 1.0 if daemon.healthy.get(gw) else 0.0)
                    active.add_metric([gw], 1.0 if gw == daemon.active else 0.0)
                yield up
                yield active
                yield CounterMetricFamily("og_route_switches", "Times traffic moved to another gateway",
                                          value=daemon.switches)
                yield CounterMetricFamily("og_route_reconciles", "Times routes were found wrong and repaired",
                                          value=daemon.reconciles)

        REGISTRY.register(Collector())
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0")
