"""og-dns's settings: a YAML file (og-dns --config dns.yml), a few flags over it, checked once at start."""

from __future__ import annotations

import argparse
import ipaddress
import socket

import yaml

from og_kernel.og_firewall import LEARN_MAXELEM
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, TargetError, parse_networks
from og_kernel.og_webconfig import WebConfigError
from og_kernel.og_webconfig import load as load_web_config

DEFAULTS = {
    "listen": ["127.0.0.1"],
    "port": 53,
    "upstreams": [],
    "domains_file": None,
    "spool_dir": None,
    "spool_max_files": 1000,
    "min_ttl": 5,
    "max_ttl": 3600,
    "grace": 900,
    "name_cap": 64,
    "gateway_cap": 100000,
    "unlisted": "forward",
    "unlisted_table": 10000,
    "internal_networks": list(DEFAULT_INTERNAL_NETWORKS),
    "ipv6": False,
    "upstream_timeout": 2.0,
    "metrics_listen": "0.0.0.0:9901",
    "metrics_web_config_file": "",
    "name": None,
}
INTEGERS = ("port", "spool_max_files", "min_ttl", "max_ttl", "grace", "name_cap", "gateway_cap", "unlisted_table")


class ConfigError(Exception):
    """A setting that is missing or malformed; the message names it and the fix."""


def split_hostport(text, default_port, what):
    """("address", port) of "ip", "ip:port", "[v6]:port" or a bare IPv6 address."""
    text = str(text).strip()
    host, port = text, default_port
    if text.startswith("["):
        host, dummy, rest = text[1:].partition("]")
        if rest:
            port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError(port)
    except ValueError:
        raise ConfigError("%s %r: give an IP address with an optional port, e.g. 192.0.2.53 or 192.0.2.53:5353 "
                          "or [2001:db8::53]:53" % (what, text)) from None
    return host, port


class Config(object):
    """The checked settings, as attributes (the keys of DEFAULTS)."""

    def __init__(self, values):
        merged = dict(DEFAULTS)
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise ConfigError("unknown og-dns setting(s) %s; the settings are %s" % (
                ", ".join(unknown), ", ".join(sorted(DEFAULTS))))
        merged.update({k: v for k, v in values.items() if v is not None})
        for key in INTEGERS:
            try:
                merged[key] = int(merged[key])
            except (TypeError, ValueError):
                raise ConfigError("%s must be an integer, not %r" % (key, merged[key])) from None
            if merged[key] < 0:
                raise ConfigError("%s must not be negative, not %r" % (key, merged[key]))
        if not 0 < merged["port"] <= 65535:
            raise ConfigError("port must be 1-65535 (53 for DNS), not %r" % (merged["port"],))
        if merged["gateway_cap"] > LEARN_MAXELEM:
            raise ConfigError("gateway_cap %d is more than the learn sets hold (maxelem %d, og_firewall.LEARN_MAXELEM):"
                              " give at most %d" % (merged["gateway_cap"], LEARN_MAXELEM, LEARN_MAXELEM))
        if merged["min_ttl"] > merged["max_ttl"]:
            raise ConfigError("min_ttl (%d) is above max_ttl (%d); give min_ttl <= max_ttl"
                              % (merged["min_ttl"], merged["max_ttl"]))
        if merged["unlisted"] not in ("forward", "refuse"):
            raise ConfigError("unlisted must be forward or refuse, not %r" % (merged["unlisted"],))
        if isinstance(merged["listen"], str):
            merged["listen"] = [merged["listen"]]
        for address in merged["listen"]:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError("listen address %r is not an IP address" % (address,)) from None
        if isinstance(merged["upstreams"], str):
            merged["upstreams"] = [merged["upstreams"]]
        if not merged["upstreams"]:
            raise ConfigError("upstreams is empty: give the resolvers to forward to, e.g. upstreams: [192.0.2.53]")
        merged["upstreams"] = [split_hostport(u, 53, "upstream") for u in merged["upstreams"]]
        merged["metrics_listen"] = split_hostport(merged["metrics_listen"], 9901, "metrics_listen") \
            if merged["metrics_listen"] else None
        merged["metrics_web_config"] = None
        if merged["metrics_web_config_file"]:
            try:
                merged["metrics_web_config"] = load_web_config(str(merged["metrics_web_config_file"]))
            except WebConfigError as exc:
                raise ConfigError("metrics_web_config_file: %s" % exc) from None
        try:
            merged["upstream_timeout"] = float(merged["upstream_timeout"])
        except (TypeError, ValueError):
            raise ConfigError("upstream_timeout must be a number of seconds, not %r"
                              % (merged["upstream_timeout"],)) from None
        if merged["upstream_timeout"] <= 0:
            raise ConfigError("upstream_timeout must be more than 0 seconds (e.g. 2.0), not %r"
                              % (merged["upstream_timeout"],))
        try:
            parse_networks(merged["internal_networks"])
        except TargetError as exc:
            raise ConfigError("internal_networks: %s" % exc) from None
        merged["ipv6"] = bool(merged["ipv6"])
        if not merged["name"]:
            merged["name"] = socket.gethostname()
        self.__dict__.update(merged)


def parser():
    p = argparse.ArgumentParser(prog="og-dns", description="The gateway's DNS forwarder that learns the "
                                "addresses of domain entries into the kernel learn sets (docs/dns.md).")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--listen", action="append", help="address to listen on (repeatable)")
    p.add_argument("--port", type=int)
    p.add_argument("--upstream", action="append", dest="upstreams", help="ip[:port] of a resolver (repeatable)")
    p.add_argument("--domains-file", dest="domains_file")
    p.add_argument("--spool-dir", dest="spool_dir")
    p.add_argument("--metrics-listen", dest="metrics_listen")
    p.add_argument("--metrics-web-config-file", dest="metrics_web_config_file",
                   help="TLS and basic auth for /metrics, a web config in node_exporter's shape (docs/tls.md)")
    p.add_argument("--unlisted", choices=("forward", "refuse"))
    p.add_argument("--name")
    return p


def load(argv=None):
    """The Config of the command line (the file's settings, then the flags)."""
    args = parser().parse_args(argv)
    values = {}
    if args.config:
        try:
            with open(args.config) as fh:
                values = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("cannot read the config file %s: %s" % (args.config, exc)) from None
        if not isinstance(values, dict):
            raise ConfigError("the config file %s must hold a mapping of settings" % args.config)
    for key in ("listen", "port", "upstreams", "domains_file", "spool_dir", "metrics_listen",
                "metrics_web_config_file", "unlisted", "name"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return Config(values)
