"""The outputguard.egress server: allowlist entries, the change log, and the gateway WebSocket."""

from __future__ import annotations

import logging
import os

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_sock import Sock
from sqlalchemy import event, text

from . import config as config_mod
from .models import db

__version__ = "0.1.0"
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
    Migrate(app, db, directory=MIGRATIONS, render_as_batch=True)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)

    from .api import bp as api_bp, register_errors
    from .services.hub import Hub
    from .ws import gateway as ws_gateway

    from . import metrics
    app.register_blueprint(api_bp)
    metrics.install(app)
    register_errors(app)
    from . import ui
    ui.install(app)
    sock = Sock(app)
    app.extensions["og_hub"] = Hub(app)
    from .services.resolver import Resolver
    app.extensions["og_resolver"] = Resolver(app)
    ws_gateway.register(app, sock)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        try:
            db.session.execute(text("SELECT 1"))
            from .services.changelog import head_revision
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
    from alembic.migration import MigrationContext
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def init_db(app):
    """Migrate the schema to the newest Alembic revision and make the log head; True if anything changed."""
    import flask_migrate
    from .services.changelog import ensure_head
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        before = schema_revision()
        flask_migrate.upgrade(directory=MIGRATIONS)
        after = schema_revision()
        ensure_head()
        return after != before
