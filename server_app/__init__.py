"""The outputguard.egress server: allowlist entries, the change log, and the gateway WebSocket."""

from __future__ import annotations

import logging
import os

from flask import Flask, jsonify
from flask_sock import Sock
from sqlalchemy import event, text

from . import config as config_mod
from .models import db

__version__ = "0.1.0"


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
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)

    from .api import bp as api_bp, register_errors
    from .services.hub import Hub
    from .ws import gateway as ws_gateway

    app.register_blueprint(api_bp)
    register_errors(app)
    sock = Sock(app)
    app.extensions["og_hub"] = Hub(app)
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
        return jsonify({"status": "ready", "revision": head})

    return app


def init_db(app):
    """Create missing tables and the log head; return True if anything was created."""
    from sqlalchemy import inspect
    from .services.changelog import ensure_head
    with app.app_context():
        before = set(inspect(db.engine).get_table_names())
        db.create_all()
        after = set(inspect(db.engine).get_table_names())
        ensure_head()
        return after != before
