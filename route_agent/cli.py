"""og-route command line; flags compatible with outputGuard's client (-iptables-gateway)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import ssl
import sys


def parser():
    p = argparse.ArgumentParser(
        prog="og-route",
        description="Route every public address range to the outputguard.egress gateways and keep it so: "
                    "re-assert on link and address changes, fail over between gateways by health check.")
    p.add_argument("--gateway", "-iptables-gateway", dest="gateways", action="append", default=[], metavar="IP",
                   help="gateway address on a directly connected network; repeat for standby or ECMP gateways")
    p.add_argument("--mode", choices=["failover", "ecmp"], default="failover",
                   help="failover: first healthy gateway carries the traffic; ecmp: all healthy gateways share it")
    p.add_argument("--internal-network", dest="internal_networks", action="append", default=[], metavar="CIDR",
                   help="internal network that keeps its own route (default: the built-in internal list)")
    p.add_argument("--exclude", action="append", default=[], metavar="CIDR",
                   help="network that keeps its current route (management, VPN)")
    p.add_argument("--ipv6", action="store_true", help="route public IPv6 ranges as well")
    p.add_argument("--health-port", type=int, default=9900, metavar="PORT",
                   help="port of the gateways' health endpoint (/healthz of og-gateway-agent); 0 disables checks")
    p.add_argument("--health-ca-file", default="", metavar="PATH",
                   help="probe the gateways' /healthz over HTTPS, verified against this PEM CA and the gateway's "
                        "address (their metrics behind a web config with TLS, docs/tls.md); default: plain HTTP")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve /healthz and /metrics here (default: off)")
    p.add_argument("--metrics-web-config-file", default="", metavar="PATH",
                   help="web config in node_exporter's shape (TLS, basic auth) for --metrics-listen (docs/tls.md); "
                        "default: plain HTTP")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="health-check interval")
    p.add_argument("--fall", type=int, default=2, metavar="N",
                   help="failed health checks in a row before a gateway counts as down (default 2)")
    p.add_argument("--rise", type=int, default=2, metavar="N",
                   help="good health checks in a row before a gateway counts as up again (default 2)")
    p.add_argument("--once", action="store_true", help="apply the routes once and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def validate(args):
    """A list of problems, each naming the value and the fix."""
    problems = []
    if not args.gateways:
        problems.append("no gateway given; pass --gateway IP (the gateway's address on this host's LAN)")
    addresses = []
    for gw in args.gateways:
        try:
            addresses.append(ipaddress.ip_address(gw))
        except ValueError:
            problems.append("--gateway %r is not an IP address; give the gateway's address, e.g. 10.77.0.1" % gw)
    for address in sorted(set(a for a in addresses if addresses.count(a) > 1)):
        problems.append("--gateway %s is given twice; give each gateway once (the first is the primary)" % address)
    if addresses and not any(a.version == 4 for a in addresses):
        problems.append("no --gateway is an IPv4 address; the public IPv4 ranges need one")
    if args.ipv6 and addresses and not any(a.version == 6 for a in addresses):
        problems.append("--ipv6 needs an IPv6 --gateway as well; add one or drop --ipv6")
    for flag, values in (("--internal-network", args.internal_networks), ("--exclude", args.exclude)):
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                problems.append("%s %r is not a network; use CIDR notation, e.g. 10.0.0.0/8" % (flag, value))
    if not 0 <= args.health_port <= 65535:
        problems.append("--health-port %d is not a port; use 1-65535, or 0 to disable health checks"
                        % args.health_port)
    if args.health_ca_file and not args.health_port:
        problems.append("--health-ca-file needs health checks (--health-port is 0); give the gateways' metrics port "
                        "or drop --health-ca-file")
    if args.metrics_web_config_file and not args.metrics_listen:
        problems.append("--metrics-web-config-file needs --metrics-listen (it secures that endpoint); add "
                        "--metrics-listen ADDRESS:PORT or drop the web config")
    if args.interval <= 0:
        problems.append("--interval %s must be positive" % args.interval)
    for flag, value in (("--fall", args.fall), ("--rise", args.rise)):
        if value < 1:
            problems.append("%s %d must be 1 or more (health checks in a row)" % (flag, value))
    if args.metrics_listen:
        host, _colon, port = args.metrics_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append("--metrics-listen %r must be HOST:PORT, e.g. 127.0.0.1:9901 or [::1]:9901"
                            % args.metrics_listen)
    return problems


def main(argv=None):
    args = parser().parse_args(argv)
    problems = validate(args)
    if problems:
        for problem in problems:
            print("og-route: %s" % problem, file=sys.stderr)
        return 2
    # --log-level debug is og-route's own detail, not every library's (pyroute2 logs each netlink message).
    logging.basicConfig(level=max(logging.INFO, getattr(logging, args.log_level.upper())),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("og").setLevel(args.log_level.upper())
    from og_kernel.og_command import CommandError
    from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS
    from og_kernel.og_webconfig import WebConfigError
    from og_kernel.og_webconfig import load as load_web_config

    web_config = None
    if args.metrics_web_config_file:
        try:
            web_config = load_web_config(args.metrics_web_config_file)
        except WebConfigError as exc:
            print("og-route: --metrics-web-config-file: %s" % exc, file=sys.stderr)
            return 2
    from .daemon import Prober, RouteDaemon

    try:
        prober = Prober(args.health_ca_file)
    except (OSError, ssl.SSLError) as exc:
        print("og-route: --health-ca-file %s: cannot load it as a CA (%s); give the PEM CA certificate that signed "
              "the gateways' metrics certificates" % (args.health_ca_file, getattr(exc, "strerror", None) or exc),
              file=sys.stderr)
        return 2
    try:
        daemon = RouteDaemon(args.gateways, mode=args.mode,
                             internal_networks=args.internal_networks or DEFAULT_INTERNAL_NETWORKS,
                             exclude=args.exclude, ipv6=args.ipv6, health_port=args.health_port,
                             interval=args.interval, fall=args.fall, rise=args.rise, prober=prober)
    except CommandError as exc:
        print("og-route: %s" % exc.msg, file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.request_stop())
    try:
        daemon.check()
        if args.once:
            daemon.probe_all()
            daemon.reconcile()
            return 0
        if args.metrics_listen:
            try:
                daemon.serve_metrics(args.metrics_listen, web_config)
            except OSError as exc:
                print("og-route: cannot listen on --metrics-listen %s: %s; choose a free address and port"
                      % (args.metrics_listen, exc.strerror or exc), file=sys.stderr)
                return 1
        daemon.run()
    except CommandError as exc:
        print("og-route: %s" % exc.msg, file=sys.stderr)
        return 1
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
