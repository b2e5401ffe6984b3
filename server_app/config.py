"""Server configuration: a YAML file, then OG_* environment overrides, validated all at once."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from urllib.parse import quote_plus

import yaml

from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, TargetError, parse_networks

DEFAULTS = {
    "listen": "0.0.0.0:8080",
    "data_dir": "/var/lib/outputguard/server",
    "database_url": "",
    "secret_key": "",
    "internal_networks": list(DEFAULT_INTERNAL_NETWORKS),
    "min_prefix_v4": 8,
    "min_prefix_v6": 16,
    "dns_servers": [],
    "log_level": "INFO",
    "changelog_keep": 100000,
    "threads": 64,
    # This replica's name in the gateways' session records (docs/ha.md); "" means <hostname>:<listen port>.
    "replica_name": "",
    # The resolver of domain entries (docs/resolver.md).
    "resolver_enabled": True,
    "resolve_interval": 60,
    "resolve_min_interval": 5,
    "resolve_grace": 900,
    "resolve_cap": 256,
    "resolve_aaaa": True,
    "resolve_concurrency": 32,
    "dns_timeout": 2.0,
    "dns_tries": 2,
    # The UI (docs/ui.md).
    "login_max_failures": 5,
    "login_lockout": 300,
    "session_cookie_secure": False,
    "session_hours": 12,
    "traffic_retention_days": 7,
    # Names no entry allows, as the gateways' DNS forwarders counted them (docs/dns.md, "Unlisted names").
    "dns_unlisted_max_rows": 100000,
    "dns_unlisted_retention_days": 7,
    # Which names the gateways' DNS forwarders answered with which addresses: the names of a blocked destination
    # (docs/dns.md, "Answers"); rows last seen longer ago, then the oldest beyond the cap, go every 10 s.
    "dns_answers_max_rows": 100000,
    "dns_answers_retention_days": 7,
    # The Blocked page (docs/ui.md): refused attempts kept this many days after their last one, and at most this
    # many rows (the ones seen longest ago go first); housekeeping prunes both every minute.
    "blocked_retention_days": 7,
    "blocked_max_rows": 100000,
    # TLS (docs/tls.md): HTTPS and WSS on the listen address when both files are set; plain HTTP otherwise.
    "tls_cert_file": "",
    "tls_key_file": "",
    "tls_min_version": "1.2",
    # Mutual TLS for gateways: /ws/gateway also needs a client certificate signed by a CA in this file (the token
    # is still required). Other clients (UI, API) are asked for none and need none. Empty: off.
    "tls_client_ca_file": "",
    # Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto/-Host/-Port headers are believed.
    "trusted_proxies": [],
}
# The database keys of outputGuard, the system this one replaces: still accepted, turned into a database URL.
OUTPUTGUARD_DB_KEYS = ("db_user", "db_password", "db_server", "db_port", "db_name")
ENV_PREFIX = "OG_"
LIST_KEYS = ("internal_networks", "dns_servers", "trusted_proxies")
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class ConfigError(ValueError):
    """Every problem of a configuration, listed at once."""

    def __init__(self, problems):
        super().__init__("invalid configuration:\n" + "\n".join("  - " + p for p in problems))
        self.problems = problems


def load(path=None, overrides=None, environ=None):
    """Read the YAML file (if any), apply OG_* variables and overrides, validate, and return a dict."""
    environ = os.environ if environ is None else environ
    raw = {}
    problems = []
    if path:
        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(["cannot read %s: %s" % (path, exc.strerror)])
        except yaml.YAMLError as exc:
            raise ConfigError(["%s is not valid YAML: %s" % (path, exc)])
        if not isinstance(raw, dict):
            raise ConfigError(["%s must hold a mapping of settings, not %s" % (path, type(raw).__name__)])
    for key in DEFAULTS:
        env = environ.get(ENV_PREFIX + key.upper())
        if env is not None:
            raw[key] = yaml.safe_load(env) if key in LIST_KEYS else env
    raw.update(overrides or {})

    legacy = {k: raw.pop(k) for k in OUTPUTGUARD_DB_KEYS if k in raw}
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        problems.append("unknown setting(s) %s; known settings are %s" % (", ".join(unknown), ", ".join(sorted(DEFAULTS))))
    cfg = dict(DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS})
    if legacy:
        missing = [k for k in ("db_user", "db_server", "db_name") if not legacy.get(k)]
        if missing:
            problems.append("outputGuard's database keys need %s as well" % ", ".join(missing))
        elif not cfg["database_url"]:
            cfg["database_url"] = "mysql+pymysql://%s:%s@%s:%s/%s" % (
                quote_plus(str(legacy["db_user"])), quote_plus(str(legacy.get("db_password", ""))),
                legacy["db_server"], legacy.get("db_port") or 3306, legacy["db_name"])

    host, _colon, port = str(cfg["listen"]).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append("listen %r must be HOST:PORT, e.g. 0.0.0.0:8080" % cfg["listen"])
    for key in ("min_prefix_v4", "min_prefix_v6", "changelog_keep", "threads", "resolve_interval",
                "resolve_min_interval", "resolve_grace", "resolve_cap", "resolve_concurrency", "dns_tries",
                "login_max_failures", "login_lockout", "session_hours", "traffic_retention_days",
                "dns_unlisted_max_rows", "dns_unlisted_retention_days", "dns_answers_max_rows",
                "dns_answers_retention_days", "blocked_retention_days", "blocked_max_rows"):
        try:
            cfg[key] = int(cfg[key])
            if key != "min_prefix_v4" and key != "min_prefix_v6" and key != "resolve_grace" and cfg[key] < 1:
                raise ValueError
        except (TypeError, ValueError):
            problems.append("%s %r must be a whole number%s" % (
                key, cfg[key], "" if key.startswith("min_prefix") or key == "resolve_grace" else " of at least 1"))
    try:
        cfg["dns_timeout"] = float(cfg["dns_timeout"])
        if not 0 < cfg["dns_timeout"] <= 30:
            raise ValueError
    except (TypeError, ValueError):
        problems.append("dns_timeout %r must be a number of seconds within 0-30" % (cfg["dns_timeout"],))
    for key in ("resolver_enabled", "resolve_aaaa", "session_cookie_secure"):
        value = cfg[key]
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            cfg[key] = value.lower() in ("true", "1", "yes")
        elif not isinstance(value, bool):
            problems.append("%s %r must be true or false" % (key, value))
    if isinstance(cfg["resolve_min_interval"], int) and isinstance(cfg["resolve_interval"], int) \
            and cfg["resolve_min_interval"] > cfg["resolve_interval"]:
        problems.append("resolve_min_interval %d must not exceed resolve_interval %d"
                        % (cfg["resolve_min_interval"], cfg["resolve_interval"]))
    if isinstance(cfg["min_prefix_v4"], int) and not 0 <= cfg["min_prefix_v4"] <= 32:
        problems.append("min_prefix_v4 %r must lie within 0-32" % cfg["min_prefix_v4"])
    if isinstance(cfg["min_prefix_v6"], int) and not 0 <= cfg["min_prefix_v6"] <= 128:
        problems.append("min_prefix_v6 %r must lie within 0-128" % cfg["min_prefix_v6"])
    for key in ("internal_networks", "dns_servers"):
        if not isinstance(cfg[key], list):
            problems.append("%s must be a list" % key)
    if isinstance(cfg["dns_servers"], list):
        for server in cfg["dns_servers"]:
            host, _colon, port = str(server).rpartition(":") if str(server).count(":") == 1 else (str(server), "", "")
            try:
                ipaddress.ip_address(host)
                if port and not 0 < int(port) < 65536:
                    raise ValueError
            except ValueError:
                problems.append("dns_servers entry %r must be an IP address, optionally with :PORT (IPv4)"
                                % (server,))
    if isinstance(cfg["internal_networks"], list):
        try:
            parse_networks(cfg["internal_networks"])
        except TargetError as exc:
            problems.append(str(exc))
    if not cfg["secret_key"] or len(str(cfg["secret_key"])) < 16:
        problems.append("secret_key must be set to at least 16 random characters "
                        "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if str(cfg["log_level"]).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("log_level %r must be DEBUG, INFO, WARNING or ERROR" % cfg["log_level"])
    if not isinstance(cfg["replica_name"], str) or len(cfg["replica_name"]) > 128:
        problems.append("replica_name %r must be a string of at most 128 characters, unique among the replicas "
                        "and the same across restarts (empty: <hostname>:<listen port>)" % (cfg["replica_name"],))
    problems.extend(tls_problems(cfg))
    if problems:
        raise ConfigError(problems)
    if not cfg["replica_name"]:
        cfg["replica_name"] = "%s:%s" % (socket.gethostname(), port)
    if not cfg["database_url"]:
        cfg["database_url"] = "sqlite:///" + os.path.join(os.path.abspath(cfg["data_dir"]), "server.db")
    return cfg


def tls_context(cfg):
    """The server side of TLS: the configured certificate and key, TLS 1.2 or later (or tls_min_version)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[str(cfg["tls_min_version"])]
    context.load_cert_chain(cfg["tls_cert_file"], cfg["tls_key_file"])
    if cfg.get("tls_client_ca_file"):
        # Optional at the TLS level (browsers and API clients have no certificate); a certificate that is presented
        # must chain to the CA, and /ws/gateway refuses a connection without one (server_app.ws.gateway).
        context.load_verify_locations(cafile=cfg["tls_client_ca_file"])
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def tls_problems(cfg):
    """What is wrong with the TLS settings (nothing when TLS is off and no proxy is trusted)."""
    problems = []
    cert, key, client_ca = cfg["tls_cert_file"], cfg["tls_key_file"], cfg.get("tls_client_ca_file") or ""
    if str(cfg["tls_min_version"]) not in TLS_VERSIONS:
        problems.append("tls_min_version %r must be 1.2 or 1.3" % (cfg["tls_min_version"],))
    if bool(cert) != bool(key):
        problems.append("tls_cert_file and tls_key_file must be set together (both for HTTPS and WSS, neither for "
                        "plain HTTP behind a TLS-terminating proxy); only %s is set"
                        % ("tls_cert_file" if cert else "tls_key_file"))
    elif cert:
        for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
            if not os.access(str(path), os.R_OK):
                problems.append("%s %s cannot be read: give the path of a PEM file this user may read" % (name, path))
        if not problems:
            try:
                tls_context(dict(cfg, tls_client_ca_file=""))
            except ssl.SSLError as exc:
                problems.append("tls_cert_file %s and tls_key_file %s are not a PEM certificate and its private key "
                                "(%s): give the server's certificate (its chain after it) and the key it was made "
                                "for" % (cert, key, exc.reason or exc))
    if client_ca and not cert:
        problems.append("tls_client_ca_file %s needs og-server to serve TLS itself (tls_cert_file and tls_key_file): "
                        "a client certificate does not pass a TLS-terminating proxy; set both or drop "
                        "tls_client_ca_file" % client_ca)
    elif client_ca:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            problems.append("tls_client_ca_file %s is not a readable PEM CA certificate (%s): give the CA that signs "
                            "the gateways' client certificates" % (client_ca, getattr(exc, "strerror", None)
                                                                   or getattr(exc, "reason", None) or exc))
    if not isinstance(cfg["trusted_proxies"], list):
        problems.append("trusted_proxies must be a list of proxy addresses or networks, e.g. [10.0.0.7]")
    else:
        for proxy in cfg["trusted_proxies"]:
            try:
                ipaddress.ip_network(str(proxy), strict=False)
            except ValueError:
                problems.append("trusted_proxies entry %r must be an IP address or network, e.g. 10.0.0.7 or "
                                "10.0.0.0/24" % (proxy,))
    return problems
