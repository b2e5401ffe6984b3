"""The namespace prefixes of concurrent test workers (tests/support): distinct per worker, checked for clashes."""

import pytest

from tests.support import PrefixError, prefixes, worker_prefix


def test_each_worker_moves_the_third_character_on_by_its_number():
    assert [worker_prefix("ogt-", w) for w in ("", "gw0", "gw1", "gw2", "gw6")] == [
        "ogt-", "ogt-", "ogu-", "ogv-", "ogz-"]
    assert [worker_prefix("h1y-", w) for w in ("gw1", "gw2")] == ["h1z-", "h10-"]


def test_the_defaults_are_apart_for_the_first_workers(monkeypatch):
    for variable in ("OG_TEST_PREFIX", "OG_E2E_PREFIX", "OG_RUNNER_PREFIX", "OG_MOLECULE_PREFIX",
                     "OG_MOLECULE_SECOND_PREFIX"):
        monkeypatch.delenv(variable, raising=False)
    assert prefixes("gw2") == {"OG_TEST_PREFIX": "ogv-", "OG_E2E_PREFIX": "oge-", "OG_RUNNER_PREFIX": "ogr-",
                               "OG_MOLECULE_PREFIX": "ogm-", "OG_MOLECULE_SECOND_PREFIX": "ogn-"}


def test_a_worker_prefix_that_meets_another_use_is_refused_naming_both(monkeypatch):
    monkeypatch.setenv("OG_TEST_PREFIX", "h1a-")
    monkeypatch.setenv("OG_E2E_PREFIX", "h1c-")
    with pytest.raises(PrefixError) as err:
        prefixes("gw2")
    assert str(err.value) == (
        "OG_TEST_PREFIX and OG_E2E_PREFIX would both use the namespace prefix 'h1c-' (worker gw2); set them apart, "
        "e.g. OG_TEST_PREFIX=ot1- OG_E2E_PREFIX=oe1- (a worker N adds N to OG_TEST_PREFIX's third character)")


def test_a_malformed_prefix_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("OG_RUNNER_PREFIX", "runner-")
    with pytest.raises(PrefixError) as err:
        prefixes("gw0")
    assert str(err.value) == ("OG_RUNNER_PREFIX='runner-': give four characters ending in '-', the third a "
                              "lower-case letter or digit, e.g. ot1-")
