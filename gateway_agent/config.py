"""Agent configuration: flags and an optional YAML file with the same keys, validated all at once."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re

import yaml

from og_kernel.og_firewall import MODES, FirewallError, parse_client_networks
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, TargetError, parse_networks
from og_kernel.og_webconfig import WebConfigError
from og_kernel.og_webconfig import load as load_web_config

from . import tls

DEFAULTS = {
    "servers": [],
    "token": "",
    "token_file": "",
    "name": "",
    "client_networks": [],
    "outside_interface": "",
    "ipv6": False,
    "state_file": "/var/lib/outputguard/gateway/state.json",
    # The server's domain entries for og-dns (docs/dns.md); "" to neither ask for nor write them.
    "dns_domains_file": "/var/lib/outputguard/gateway/domains.json",
    # og-dns's spool_dir: what it learned goes from here to a server that speaks "learned"; "" to not send it.
    "dns_spool_dir": "/var/lib/outputguard/gateway/dns-spool",
    "metrics_listen": "0.0.0.0:9900",
    # A web config file in node_exporter's shape (TLS, basic auth) for the metrics endpoint; "" = plain HTTP.
    "metrics_web_config_file": "",
    "metrics_address_limit": 1000,
    "metrics_entry_limit": 1000,
    "ca_file": "",
    # Mutual TLS (docs/tls.md): the client certificate (chain after it) and key shown to a wss:// server whose
    # tls_client_ca_file asks for one, in addition to the token. Both or neither.
    "client_cert_file": "",
    "client_key_file": "",
    # ws:// (clear text) to hosts other than loopback is refused unless this is true (docs/tls.md).
    "allow_insecure_transport": False,
    "internal_networks": list(DEFAULT_INTERNAL_NETWORKS),
    "cut_on_remove": True,
    # False: clients' TCP to port 853 (DNS over TLS) is refused, so names go through og-dns (docs/dns.md).
    "allow_dns_over_tls": False,
    # enforce: refuse what is not allowed; observe: forward it and record it as "would have been refused". A mode
    # the server sets (PUT /api/v1/gateways/NAME/mode) replaces it, also across restarts (state.save_mode,
    # docs/protocol.md).
    "mode": "enforce",
    "drift_interval": 30.0,
    "log_level": "INFO",
}
LIST_KEYS = ("servers", "client_networks", "internal_networks")
BOOL_KEYS = ("ipv6", "cut_on_remove", "allow_insecure_transport", "allow_dns_over_tls")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    def __init__(self, problems):
        super().__init__("invalid configuration:\n" + "\n".join("  - " + p for p in problems))
        self.problems = problems


def parser():
    p = argparse.ArgumentParser(prog="og-gateway-agent",
                                description="Follow an outputguard.egress server and enforce its allowlist.")
    p.add_argument("--config", metavar="PATH", help="YAML file with the same keys as these flags")
    p.add_argument("--server", dest="servers", action="append", metavar="URL",
                   help="ws:// or wss:// URL of a server's /ws/gateway; repeat for fallbacks")
    p.add_argument("-iptables-wss-server", dest="outputguard_server", metavar="HOST:PORT",
                   help="the flag of outputGuard, the system this one replaces: same as --server "
                        "ws://HOST:PORT/ws/gateway")
    p.add_argument("--token", help="gateway token (prefer --token-file: flags show in ps)")
    p.add_argument("--token-file", metavar="PATH")
    p.add_argument("--name", help="this gateway's name (default: the host name)")
    p.add_argument("--client-network", dest="client_networks", action="append", metavar="CIDR")
    p.add_argument("--outside-interface", metavar="IF")
    p.add_argument("--ipv6", action="store_true", default=None)
    p.add_argument("--state-file", metavar="PATH")
    p.add_argument("--dns-domains-file", metavar="PATH",
                   help="where the server's domain entries are written for og-dns (default "
                        "/var/lib/outputguard/gateway/domains.json; \"\" to not ask the server for them)")
    p.add_argument("--dns-spool-dir", metavar="PATH",
                   help="og-dns's spool_dir, whose files go to the server as learned frames (default "
                        "/var/lib/outputguard/gateway/dns-spool; \"\" to not send them)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT")
    p.add_argument("--metrics-address-limit", type=int, metavar="N",
                   help="addresses with /metrics series of their own, the busiest first; the others are summed "
                        "up as address=\"other\" (default 1000)")
    p.add_argument("--metrics-entry-limit", type=int, metavar="N",
                   help="allowlist entries (and groups of entries sharing elements) with /metrics series of their "
                        "own, the busiest first; the others are summed up as entry=\"other\" (default 1000)")
    p.add_argument("--ca-file", metavar="PATH", help="CA certificate(s) to verify wss:// servers with (default: the "
                   "system's CAs)")
    p.add_argument("--client-cert-file", metavar="PATH",
                   help="client certificate (PEM, chain after it) for servers that require one (mutual TLS)")
    p.add_argument("--client-key-file", metavar="PATH", help="the client certificate's private key (PEM)")
    p.add_argument("--allow-insecure-transport", action="store_true", default=None,
                   help="allow ws:// (clear text) to hosts other than loopback")
    p.add_argument("--allow-dns-over-tls", action="store_true", default=None,
                   help="let clients connect to TCP port 853 (DNS over TLS); refused by default")
    p.add_argument("--mode", choices=MODES,
                   help="enforce (default: refuse what is not allowed) or observe (forward it and record it as "
                        "would-have-been-refused)")
    p.add_argument("--internal-network", dest="internal_networks", action="append", metavar="CIDR")
    p.add_argument("--no-cut-on-remove", dest="cut_on_remove", action="store_false", default=None,
                   help="keep established connections to removed destinations")
    p.add_argument("--drift-interval", type=float, metavar="SECONDS",
                   help="how often the kernel is compared with the applied state and repaired (default 30)")
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    return p


def load(argv=None):
    """Parse flags (and the YAML file they name); return a validated dict or raise ConfigError."""
    args = parser().parse_args(argv)
    cfg = dict(DEFAULTS)
    problems = []
    if args.config:
        try:
            with open(args.config) as fh:
                data = yaml.safe_load(fh) or {}
            if not isinstance(data, dict):
                raise ConfigError(["%s must hold a mapping of settings" % args.config])
            unknown = sorted(set(data) - set(DEFAULTS))
            if unknown:
                problems.append("unknown setting(s) in %s: %s" % (args.config, ", ".join(unknown)))
            cfg.update({k: v for k, v in data.items() if k in DEFAULTS})
        except OSError as exc:
            raise ConfigError(["cannot read %s: %s" % (args.config, exc.strerror)])
        except yaml.YAMLError as exc:
            raise ConfigError(["%s is not valid YAML: %s" % (args.config, exc)])
    for key, value in vars(args).items():
        if key in DEFAULTS and value is not None:
            cfg[key] = value
    if args.outputguard_server:
        cfg["servers"] = list(cfg["servers"]) + ["ws://%s/ws/gateway" % args.outputguard_server]

    for key in LIST_KEYS:
        if not isinstance(cfg[key], list):
            problems.append("%s must be a list, not %r" % (key, cfg[key]))
            cfg[key] = []
    for key in BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            problems.append("%s must be true or false, not %r" % (key, cfg[key]))
    if not cfg["servers"]:
        problems.append("no server: give --server ws://HOST:PORT/ws/gateway (or servers: in the config file)")
    for url in cfg["servers"]:
        if not re.match(r"^wss?://[^/\s]+(/\S*)?$", str(url)):
            problems.append("server %r must be a ws:// or wss:// URL such as ws://10.0.0.5:8080/ws/gateway" % url)
    problems.extend(tls.url_problems(cfg["servers"], cfg["allow_insecure_transport"]))
    if cfg["token_file"] and not cfg["token"]:
        try:
            with open(cfg["token_file"]) as fh:
                cfg["token"] = fh.read().strip()
            if not cfg["token"]:
                problems.append("token_file %s is empty: put the gateway token in it" % cfg["token_file"])
        except OSError as exc:
            problems.append("cannot read token_file %s: %s" % (cfg["token_file"], exc.strerror))
    elif not cfg["token"]:
        problems.append("no token: give --token-file PATH holding a token with the gateway role")
    if not cfg["client_networks"]:
        problems.append("no client networks: give --client-network CIDR for each network this gateway forwards for")
    if cfg["client_networks"]:
        try:
            parse_client_networks(cfg["client_networks"], cfg["ipv6"] is True)
        except FirewallError as exc:
            problems.append(exc.msg)
    try:
        parse_networks(cfg["internal_networks"], "internal network")
    except TargetError as exc:
        problems.append(str(exc))
    if not cfg["outside_interface"]:
        problems.append("no outside interface: give --outside-interface IF (the interface towards the internet)")
    host, _colon, port = str(cfg["metrics_listen"]).rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        problems.append("metrics_listen %r must be ADDRESS:PORT such as 0.0.0.0:9900" % cfg["metrics_listen"])
    for key, what in (("metrics_address_limit", "addresses"), ("metrics_entry_limit", "entries")):
        limit = cfg[key]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            problems.append("%s %r must be a whole number of %s, 0 or more, e.g. 1000" % (key, limit, what))
    try:
        if isinstance(cfg["drift_interval"], bool):
            raise ValueError
        interval = float(cfg["drift_interval"])
        if interval <= 0 or math.isnan(interval):  # NaN is neither above nor below 0: refused too
            raise ValueError
        cfg["drift_interval"] = interval
    except (TypeError, ValueError):
        problems.append("drift_interval %r must be a number of seconds above 0, e.g. 30" % (cfg["drift_interval"],))
    # Loaded once, here: metrics.serve takes the checked WebConfig (or None for plain HTTP).
    cfg["metrics_web_config"] = None
    if cfg["metrics_web_config_file"]:
        try:
            cfg["metrics_web_config"] = load_web_config(str(cfg["metrics_web_config_file"]))
        except WebConfigError as exc:
            problems.append("metrics_web_config_file: %s" % exc)
    domains_file = cfg["dns_domains_file"]
    if not isinstance(domains_file, str) or (domains_file and not os.path.isabs(domains_file)):
        problems.append("dns_domains_file %r must be an absolute path such as /var/lib/outputguard/gateway/"
                        "domains.json, or \"\" to not ask the server for domain entries" % (cfg["dns_domains_file"],))
    spool_dir = cfg["dns_spool_dir"]
    if not isinstance(spool_dir, str) or (spool_dir and not os.path.isabs(spool_dir)):
        problems.append("dns_spool_dir %r must be an absolute path such as /var/lib/outputguard/gateway/"
                        "dns-spool (og-dns's spool_dir), or \"\" to not send what og-dns learned"
                        % (cfg["dns_spool_dir"],))
    if cfg["mode"] not in MODES:
        problems.append("mode %r must be enforce (refuse what is not allowed) or observe (forward it and record it "
                        "as would-have-been-refused)" % (cfg["mode"],))
    if str(cfg["log_level"]).upper() not in LOG_LEVELS:
        problems.append("log_level %r must be one of %s" % (cfg["log_level"], ", ".join(LOG_LEVELS)))
    if cfg["ca_file"] and not os.path.isfile(cfg["ca_file"]):
        problems.append("ca_file %s does not exist: give the CA certificate (PEM) that signed the server's "
                        "certificate" % cfg["ca_file"])
    elif cfg["ca_file"]:
        try:
            tls.client_context(cfg["ca_file"])
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            problems.append("ca_file %s holds no PEM CA certificate (%s): give the CA certificate that signed the "
                            "server's certificate" % (cfg["ca_file"], exc))
    cert, key = cfg["client_cert_file"] or "", cfg["client_key_file"] or ""
    if bool(cert) != bool(key):
        problems.append("client_cert_file and client_key_file must be set together (mutual TLS: the certificate and "
                        "its key); only %s is set" % ("client_cert_file" if cert else "client_key_file"))
    elif cert:
        try:
            tls.client_context("", cert, key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            problems.append("client_cert_file %s and client_key_file %s are not a readable PEM certificate and its "
                            "key (%s): give the gateway's client certificate and the key it was made for"
                            % (cert, key, getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc))
    if problems:
        raise ConfigError(problems)
    cfg["token"] = str(cfg["token"])
    cfg["name"] = str(cfg["name"] or os.uname().nodename)
    return cfg
