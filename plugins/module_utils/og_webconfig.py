# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS and basic auth for the metrics endpoints, configured by a web config file in node_exporter's shape.

The file is the Prometheus exporter-toolkit's web configuration (docs/web-configuration.md there)::

    tls_server_config:
      cert_file: /etc/outputguard/metrics.crt
      key_file: /etc/outputguard/metrics.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (the default)
      client_ca_file: /etc/outputguard/metrics-ca.crt
      min_version: TLS12                              # TLS12 (the default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...                          # a bcrypt hash

Only the keys above are taken; any other key, or a value this module cannot honour (TLS10, a client auth
type it does not build), is refused with a message naming the key and the fix, rather than silently ignored.
load() reads and checks the file; WebConfig.ssl_context() builds the server's context; WebConfig.check_auth()
checks an Authorization header against the hashes (successful checks cached, as exporter-toolkit does, since
bcrypt is slow on purpose); serve() runs an http.server handler with both. /healthz stays open to anyone who can
connect (og-route probes the gateways' /healthz without credentials), as it is behind TLS when TLS is on.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import hashlib
import hmac
import http.server
import os
import re
import socket
import ssl
import threading

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - the agent and og-route depend on pyyaml
    HAS_YAML = False

try:
    import bcrypt
    HAS_BCRYPT = True
except ImportError:  # pragma: no cover - the agent and og-route depend on bcrypt
    HAS_BCRYPT = False

TOP_KEYS = ("tls_server_config", "basic_auth_users")
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version")
CLIENT_AUTH_TYPES = ("NoClientCert", "RequireAndVerifyClientCert")
MIN_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
REALM = "outputguard metrics"
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
OPEN_PATHS = ("/healthz",)   # answered without credentials: og-route's probe of the gateways


class WebConfigError(Exception):
    """The web config file cannot be used; the message names the file, the key and the fix."""


class WebConfig(object):
    """One checked web config: TLS settings (or None) and the basic auth users (name: bcrypt hash)."""

    def __init__(self, path, tls, users):
        self.path = path
        self.tls = tls
        self.users = users
        self._cache = set()
        self._cache_lock = threading.Lock()
        self.context = self.ssl_context()   # the certificate and key load now, not at the first scrape

    def ssl_context(self):
        """The server's SSLContext (TLS 1.2 or newer), or None when the file has no tls_server_config."""
        if self.tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MIN_VERSIONS[self.tls.get("min_version", "TLS12")]
        try:
            context.load_cert_chain(self.tls["cert_file"], self.tls["key_file"])
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError("%s: tls_server_config: cannot load cert_file %s with key_file %s: %s; give a PEM "
                                 "certificate and its private key" % (self.path, self.tls["cert_file"],
                                                                      self.tls["key_file"], exc))
        if self.tls.get("client_auth_type", "NoClientCert") == "RequireAndVerifyClientCert":
            try:
                context.load_verify_locations(cafile=self.tls["client_ca_file"])
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError("%s: tls_server_config: cannot load client_ca_file %s: %s; give the PEM CA "
                                     "that signs the scrapers' certificates"
                                     % (self.path, self.tls["client_ca_file"], exc))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def check_auth(self, header):
        """True when no users are configured, or the Authorization header carries a configured user's password."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _colon, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        known = user in self.users
        # An unknown user is checked against a configured hash, so it costs what a known one does.
        hashed = (self.users[user] if known else next(iter(self.users.values()))).encode()
        key = hashlib.sha256(b"%s\0%s\0%s" % (user.encode(), password.encode(), hashed)).digest()
        with self._cache_lock:
            cached = any(hmac.compare_digest(key, seen) for seen in self._cache)
        if cached:
            return known
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:   # bcrypt 5 refuses passwords over 72 bytes: not a configured user's password
            return False
        if ok and known:
            with self._cache_lock:
                self._cache.add(key)
            return True
        return False


def _fail(path, what):
    raise WebConfigError("%s: %s" % (path, what))


def parse(data, path="web config"):
    """Check a loaded web config (a dict in exporter-toolkit's shape) and return a WebConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(path, "must be a mapping with tls_server_config and/or basic_auth_users, not %s" % type(data).__name__)
    for key in data:
        if key not in TOP_KEYS:
            _fail(path, "unknown key %r; this web config takes only %s" % (key, ", ".join(TOP_KEYS)))
    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            _fail(path, "tls_server_config must be a mapping with cert_file and key_file")
        for key in tls:
            if key not in TLS_KEYS:
                _fail(path, "tls_server_config: unknown or unsupported key %r; this web config takes only %s"
                      % (key, ", ".join(TLS_KEYS)))
        for key in ("cert_file", "key_file"):
            if not isinstance(tls.get(key), str) or not tls[key]:
                _fail(path, "tls_server_config: %s is required (a path to a PEM file)" % key)
            if not os.path.isfile(tls[key]):
                _fail(path, "tls_server_config: %s %s does not exist; create it or fix the path" % (key, tls[key]))
        auth_type = tls.get("client_auth_type", "NoClientCert")
        if auth_type not in CLIENT_AUTH_TYPES:
            _fail(path, "tls_server_config: client_auth_type %r is not supported; use one of %s"
                  % (auth_type, ", ".join(CLIENT_AUTH_TYPES)))
        if auth_type == "RequireAndVerifyClientCert":
            ca = tls.get("client_ca_file")
            if not isinstance(ca, str) or not ca:
                _fail(path, "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file")
            if not os.path.isfile(ca):
                _fail(path, "tls_server_config: client_ca_file %s does not exist; create it or fix the path" % ca)
        elif tls.get("client_ca_file"):
            _fail(path, "tls_server_config: client_ca_file is given but client_auth_type is %s; set client_auth_type"
                  " RequireAndVerifyClientCert or drop client_ca_file" % auth_type)
        version = tls.get("min_version", "TLS12")
        if version not in MIN_VERSIONS:
            _fail(path, "tls_server_config: min_version %r is not supported; use TLS12 or TLS13" % (version,))
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        _fail(path, "basic_auth_users must be a mapping of user name to bcrypt hash")
    for name, hashed in users.items():
        if not isinstance(name, str) or not name or ":" in name:
            _fail(path, "basic_auth_users: user name %r must be a non-empty string without ':'" % (name,))
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            _fail(path, "basic_auth_users: %s: the value must be a bcrypt hash ($2b$..., 60 characters), e.g. from "
                  "htpasswd -nBC 12 %s, not a plain password" % (name, name))
    if users and not HAS_BCRYPT:
        _fail(path, "basic_auth_users needs the bcrypt Python package; install it")
    return WebConfig(path, tls, dict(users))


def load(path):
    """Read and check the web config file at path; WebConfigError names the file and what is wrong."""
    if not HAS_YAML:
        _fail(path, "reading a web config needs the pyyaml Python package; install it")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        _fail(path, "cannot read the web config file: %s" % exc.strerror)
    except yaml.YAMLError as exc:
        _fail(path, "not valid YAML: %s" % exc)
    return parse(data, path)


def serve(host, port, handler_class, config=None, name="og-metrics"):
    """Serve handler_class (an http.server handler) on host:port from a daemon thread; with config (a WebConfig)
    over its TLS and behind its basic auth (OPEN_PATHS excepted). Returns the server (shutdown() stops it)."""

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        # "[::]" listens on IPv6 (and IPv4-mapped), so og-route can probe IPv6 gateways.
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, int(port)), handler_class)
    if config is not None:
        _wrap(server, handler_class, config)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def _wrap(server, handler_class, config):
    """Put config's TLS on server's socket and its basic auth in front of handler_class."""
    if config.context is not None:
        server.socket = config.context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        # The handshake runs on the request's thread (finish_request below), not in accept(), so a slow or
        # plain-HTTP client cannot hold up the listener.
        base_finish = server.finish_request

        def finish_request(request, client_address):
            try:
                request.settimeout(30)
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
            base_finish(request, client_address)
        server.finish_request = finish_request

    class AuthHandler(handler_class):
        def do_GET(self):
            if self.path not in OPEN_PATHS and not config.check_auth(self.headers.get("Authorization")):
                body = b"unauthorized\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="%s", charset="UTF-8"' % REALM)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            handler_class.do_GET(self)

    server.RequestHandlerClass = AuthHandler
