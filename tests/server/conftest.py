"""A real server app on a temporary SQLite database, and a client that checks every answer against the
OpenAPI document the app serves."""

import re

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from server_app import create_app, init_db
from server_app.services import tokens


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request, tmp_path):
    """Every API test runs on SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "og.db")
    return request.getfixturevalue(request.param if request.param == "mariadb" else "postgres").create_database()


@pytest.fixture
def app(tmp_path, database_url):
    app = create_app(config={"data_dir": str(tmp_path), "secret_key": "s" * 32, "database_url": database_url,
                             "resolver_enabled": False})   # the resolver has its own tests with a real DNS server
    app.config["TESTING"] = True
    init_db(app)
    yield app
    with app.app_context():
        from server_app.models import db
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def secrets(app):
    with app.app_context():
        return {role: tokens.create(role, "%s-test" % role)[1] for role in tokens.ROLES}


class Api:
    """client.method(path, token=role) -> response, validated against /api/v1/openapi.json."""

    def __init__(self, app, secrets):
        self.client = app.test_client()
        self.secrets = secrets
        self.doc = self.client.get("/api/v1/openapi.json").get_json()
        self.registry = Registry().with_resource("urn:og", Resource.from_contents(
            {"components": self.doc["components"]}, default_specification=DRAFT202012))

    def _operation(self, method, path):
        bare = path.split("?")[0][len("/api/v1"):]
        for template, item in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
            if re.match(pattern, bare) and method.lower() in item:
                # a literal path (/entries/export) wins over a template (/entries/{entry_id})
                if "{" in template and any(t == bare for t in self.doc["paths"]):
                    continue
                return template, item[method.lower()]
        raise AssertionError("%s %s is not in the OpenAPI document" % (method, bare))

    def call(self, method, path, token="admin", **kwargs):
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = "Bearer " + self.secrets.get(token, token)
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        template, op = self._operation(method, path)
        documented = op["responses"].get(str(response.status_code))
        assert documented is not None, "%s %s answered %d, which the document doesn't list" % (
            method, template, response.status_code)
        content = documented.get("content", {})
        if response.mimetype == "application/json":
            schema = content.get("application/json", {}).get("schema")
            assert schema is not None, "%s %s %d has no JSON schema" % (method, template, response.status_code)
            schema = self._resolve(schema)
            jsonschema.validate(response.get_json(), schema, registry=self.registry,
                                format_checker=jsonschema.FormatChecker())
        elif response.status_code != 204:
            assert response.mimetype in content, (method, template, response.mimetype)
        return response

    def _resolve(self, schema):
        if "$ref" in schema:
            return {"$ref": "urn:og" + schema["$ref"]}
        return schema

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, **kw):
        return self.call("POST", path, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture
def api(app, secrets):
    return Api(app, secrets)
