"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis + hypothesis).

Every generated request, valid or not, must get an answer that the document lists, matching its schema,
and never a 5xx; and nothing generated may publish an internal or too-broad network."""

import ipaddress
import tempfile

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server_app import create_app, init_db
from server_app.services import changelog, entries, tokens

_tmp = tempfile.mkdtemp(prefix="og-fuzz-")
APP = create_app(config={"data_dir": _tmp, "secret_key": "f" * 32, "resolver_enabled": False,
                         "database_url": "sqlite:///%s/fuzz.db" % _tmp})
init_db(APP)
with APP.app_context():
    ADMIN = tokens.create("admin", "fuzz-admin")[1]

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)
# One pytest test per operation, parametrized by pytest itself: schemathesis' own parametrize gives all its items
# one node id, and pytest-xdist (scripts/test) runs items by node id, so it would fuzz one operation of them all.
OPERATIONS = {operation.label: operation for operation in (result.ok() for result in schema.get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_within_its_documented_schema(label):
    @hypothesis.given(case=OPERATIONS[label].as_strategy())
    @hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                         derandomize=True, database=None)
    def answers(case):
        # positive_data_acceptance is left out: a schema cannot say "not inside an internal network", so a
        # schema-valid target such as "10.0.0.1" is rightly refused with a 400 that names the network.
        response = case.call_and_validate(headers={"Authorization": "Bearer " + ADMIN},
                                          excluded_checks=[positive_data_acceptance])
        assert response.status_code < 500, response.text

    answers()


def test_nothing_generated_published_an_internal_or_too_broad_network():
    with APP.app_context():
        policy = entries.policy_from(APP.config["OG"])
        for element in changelog.published():
            net = ipaddress.ip_network(element.split()[0])
            assert policy.internal_network_of(net) is None, element
            assert net.prefixlen >= policy.min_prefix[net.version], element
