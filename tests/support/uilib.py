"""The UI's server side under Flask's test client: an app with a user of each role, CSRF tokens, logins."""

import re

from server_app import create_app, init_db
from server_app.services import users

PW = "a-long-enough-password"
USERS = (("ada", "admin"), ("eve", "editor"), ("vic", "viewer"))


def make_app(tmp_path, **settings):
    """A SQLite og-server app (no resolver) with ada (admin), eve (editor) and vic (viewer), password PW."""
    app = create_app(dict({"data_dir": str(tmp_path), "secret_key": "k" * 32, "resolver_enabled": False},
                          **settings))
    init_db(app)
    with app.app_context():
        for name, role in USERS:
            users.create(name, PW, role, created_by=("test", "system", ""))
    return app


def csrf(client, path="/login"):
    """The CSRF token of the form on `path`."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def login(client, name, password=PW, remote="192.0.2.50"):
    """POST the login form as `name` from `remote`; the answer (302 when it worked)."""
    token = csrf(client)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": remote})
