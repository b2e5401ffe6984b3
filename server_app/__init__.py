"""The outputguard.egress server: allowlist entries, the change log, and the gateway WebSocket.

create_app wires the parts (docs/architecture.md): the extensions, the error handlers, the API, the UI,
/metrics, the gateway WebSocket, and the background threads (hub, housekeeper, resolver).
"""

from __future__ import annotations

import logging
import os

import flask_migrate
from alembic.migration import MigrationContext
from flask import Flask, jsonify
from sqlalchemy import event, text

from . import config as config_mod, errors, metrics, ui
from .api import bp as api_bp
from .background import Background
from .extensions import IdConverter, csrf, db, migrate, sock
from .services.changelog import ensure_head, head_revision
from .services.housekeeping import Housekeeper
from .services.hub import Hub
from .services.resolver import Resolver
from .services.traffic import Traffic
from .version import __version__
from .ws import gateway as ws_gateway

__all__ = ["MIGRATIONS", "__version__", "create_app", "init_db", "schema_revision"]

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()


def create_app(config=None, config_path=None):
    """Build the app from a validated configuration (dict overrides, or a YAML file)."""
    cfg = config_mod.load(config_path, overrides=config)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=cfg["secret_key"],
        SQLALCHEMY_DATABASE_URI=cfg["database_url"],
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        JSON_SORT_KEYS=False,
        OG=cfg,
    )
    if cfg["database_url"].startswith("sqlite:///"):
        os.makedirs(os.path.dirname(cfg["database_url"][len("sqlite:///"):]) or ".", exist_ok=True)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 15, "check_same_thread": False}}
    logging.basicConfig(level=cfg["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS, render_as_batch=True)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)

    app.url_map.converters["id"] = IdConverter   # before the blueprints: their routes use <id:...>
    app.register_blueprint(api_bp)
    metrics.install(app)
    errors.install(app)
    ui.install(app)
    csrf.init_app(app)
    csrf.exempt(api_bp)     # the API and the WebSocket use tokens, not cookies
    sock.init_app(app)
    hub = app.extensions["og_hub"] = Hub(app)
    resolver = app.extensions["og_resolver"] = Resolver(app)
    app.extensions["og_traffic"] = Traffic()
    housekeeper = app.extensions["og_housekeeper"] = Housekeeper(app)
    app.extensions["og_background"] = Background(hub, housekeeper, resolver)
    ws_gateway.register(app, sock)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        try:
            db.session.execute(text("SELECT 1"))
            head = head_revision()
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            return jsonify({"status": "unavailable", "database": str(exc).splitlines()[0]}), 503
        stats = app.extensions["og_resolver_stats"]
        return jsonify({"status": "ready", "revision": head, "resolver": {
            "enabled": cfg["resolver_enabled"], "leader": stats["leader"], "last_success": stats["last_success"],
            "last_duration": round(stats["last_duration"], 3), "last_error": stats["last_error"] or None}})

    return app


def schema_revision():
    """The Alembic revision the database is at (None: no schema yet). Needs an app context."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def init_db(app):
    """Migrate the schema to the newest Alembic revision and make the log head; True if anything changed."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        before = schema_revision()
        flask_migrate.upgrade(directory=MIGRATIONS)
        after = schema_revision()
        ensure_head()
        return after != before
