"""og-server under gunicorn: one threaded worker whose graceful stop closes every gateway session first.

SIGTERM to the master makes it stop listening and send SIGTERM to the worker. The worker then tells the hub,
which wakes every gateway session: each sends a close frame (1001, going away) and returns, so the agents
reconnect at once instead of backing off (docs/protocol.md). Meanwhile gunicorn lets the HTTP requests in
flight finish, for up to GRACEFUL_TIMEOUT seconds.

With tls_cert_file and tls_key_file set it serves HTTPS and WSS itself (docs/tls.md). Each new connection uses the
files as they are then: a replaced certificate takes effect without a reload, and open gateway sessions stay.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import tls_context

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 5   # seconds a stopping worker has for its requests in flight (gunicorn's graceful_timeout)


class Worker(ThreadWorker):
    """gunicorn's threaded worker (gthread), which on SIGTERM also starts closing the gateway sessions."""

    def handle_exit(self, sig, frame):
        self.wsgi.extensions["og_hub"].shutdown()   # only sets events: safe in a signal handler
        super().handle_exit(sig, frame)


class Certificate:
    """The server's TLS context, loaded again when the certificate or key file changes (rotation without reload)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.seen = None
        self.context = None

    def _stamp(self):
        stamp = []
        for path in (self.cfg["tls_cert_file"], self.cfg["tls_key_file"]):
            st = os.stat(path)
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamp)

    def current(self):
        """The context for a new connection (gunicorn's ssl_context hook calls this for each one)."""
        with self.lock:
            try:
                stamp = self._stamp()
                if stamp != self.seen:
                    self.context, self.seen = tls_context(self.cfg), stamp
                    log.info("TLS certificate loaded from %s", self.cfg["tls_cert_file"])
            except (OSError, ssl.SSLError) as exc:
                if self.context is None:
                    raise
                # Half-replaced files (a new certificate, the old key): keep serving the previous pair.
                log.warning("TLS certificate %s and key %s not loaded (%s): still serving the previous one",
                            self.cfg["tls_cert_file"], self.cfg["tls_key_file"], exc)
                self.seen = None
            return self.context


class TrustedProxies:
    """X-Forwarded-For/-Proto/-Host/-Port believed only from the configured proxies (werkzeug's ProxyFix)."""

    def __init__(self, wsgi_app, proxies):
        self.direct = wsgi_app
        self.proxied = ProxyFix(wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)
        self.networks = [ipaddress.ip_network(str(p), strict=False) for p in proxies]

    def __call__(self, environ, start_response):
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return self.direct(environ, start_response)
        if any(peer in net for net in self.networks):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)


class Server(BaseApplication):
    """The app under gunicorn, configured from the server's settings (no gunicorn configuration file)."""

    def __init__(self, app, cfg):
        self.flask_app = app
        self.og = cfg
        if cfg["trusted_proxies"]:
            app.wsgi_app = TrustedProxies(app.wsgi_app, cfg["trusted_proxies"])
        super().__init__()

    def load_config(self):
        cfg = self.og
        self.cfg.set("bind", cfg["listen"])
        self.cfg.set("worker_class", Worker)
        self.cfg.set("workers", 1)
        self.cfg.set("threads", cfg["threads"])
        # gthread accepts at most worker_connections at once (default 1000): room for every thread.
        self.cfg.set("worker_connections", cfg["threads"] + 100)
        self.cfg.set("timeout", 60)
        self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT)
        self.cfg.set("accesslog", None)
        self.cfg.set("loglevel", cfg["log_level"].lower())
        # gunicorn's own X-Forwarded-Proto trust (127.0.0.1 by default) is off: only trusted_proxies count.
        self.cfg.set("forwarded_allow_ips", "")
        if cfg["tls_cert_file"]:
            self.cfg.set("certfile", cfg["tls_cert_file"])
            self.cfg.set("keyfile", cfg["tls_key_file"])
            certificate = Certificate(cfg)
            self.cfg.set("ssl_context", lambda conf, factory: certificate.current())
        # No control socket: its default path is shared by every gunicorn on the machine.
        self.cfg.set("control_socket_disable", True)
        # The background threads must start in the worker: threads do not survive the fork.
        self.cfg.set("post_worker_init", lambda worker: self.flask_app.extensions["og_background"].start())
        # After the worker's last request: stop them (the resolver's lease is released at once).
        self.cfg.set("worker_exit", lambda arbiter, worker: self.flask_app.extensions["og_background"].stop())

    def load(self):
        return self.flask_app


def serve(app, cfg):
    """Run the app under gunicorn until SIGTERM (or SIGINT); returns 0."""
    Server(app, cfg).run()
    return 0
