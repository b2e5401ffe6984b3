"""og-server under gunicorn: one threaded worker whose graceful stop closes every gateway session first.

SIGTERM to the master makes it stop listening and send SIGTERM to the worker. The worker then tells the hub,
which wakes every gateway session: each sends a close frame (1001, going away) and returns, so the agents
reconnect at once instead of backing off (docs/protocol.md). Meanwhile gunicorn lets the HTTP requests in
flight finish, for up to GRACEFUL_TIMEOUT seconds.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

GRACEFUL_TIMEOUT = 5   # seconds a stopping worker has for its requests in flight (gunicorn's graceful_timeout)


class Worker(ThreadWorker):
    """gunicorn's threaded worker (gthread), which on SIGTERM also starts closing the gateway sessions."""

    def handle_exit(self, sig, frame):
        self.wsgi.extensions["og_hub"].shutdown()   # only sets events: safe in a signal handler
        super().handle_exit(sig, frame)


class Server(BaseApplication):
    """The app under gunicorn, configured from the server's settings (no gunicorn configuration file)."""

    def __init__(self, app, cfg):
        self.flask_app = app
        self.og = cfg
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
