"""Every role documents exactly the variables its defaults define, with the same default values."""

import os

import pytest
import yaml

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")


@pytest.mark.parametrize("role", sorted(os.listdir(ROLES)))
def test_argument_specs_match_defaults(role):
    with open(os.path.join(ROLES, role, "defaults", "main.yml")) as fh:
        defaults = yaml.safe_load(fh)
    with open(os.path.join(ROLES, role, "meta", "argument_specs.yml")) as fh:
        options = yaml.safe_load(fh)["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults)
    for key, spec in options.items():
        if not spec.get("required"):
            assert spec.get("default") == defaults[key], key


@pytest.mark.parametrize("role", sorted(os.listdir(ROLES)))
def test_every_role_has_a_readme(role):
    assert os.path.isfile(os.path.join(ROLES, role, "README.md"))
