"""The namespace lab as a fixture: built once for the e2e tests, torn down even when they fail."""

import os

import pytest

from tests.support import prefixes
from tests.support.lablib import recap, running_lab


def pytest_collection_modifyitems(items):
    # The first e2e test to run also waits for the lab to be built and site.yml to run twice (several minutes on
    # a loaded machine): the per-test limit of pyproject.toml would cut that wait short.
    for item in items:
        if item.nodeid.startswith("tests/e2e/") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1200))


@pytest.fixture(scope="session")
def lab():
    # OG_E2E_PREFIX lets two runs on one machine keep out of each other's way.
    with running_lab(prefixes()["OG_E2E_PREFIX"], "/run/og-test-lab-%d" % os.getpid()) as the_lab:
        yield the_lab


# Slow (about a minute, once per run): site.yml rolls out the whole lab twice, the second run proving idempotence.
@pytest.fixture(scope="session")
def deployed(lab):
    """site.yml run twice against the lab: (lab, first recap, second recap)."""
    first = lab.lab("site")
    second = lab.lab("site")
    return lab, recap(first.stdout), recap(second.stdout)


def set_records(lab, name, lines):
    """Replace one hosts file of the lab's dnsmasq (it re-reads the folder when a file changes)."""
    path = os.path.join(lab.dir, "dns", "hosts.d", name)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    os.rename(tmp, path)


@pytest.fixture
def records(deployed):
    """records(name, ["198.51.100.10 a.lab.test", ...]): DNS records of the lab, removed after the test."""
    lab = deployed[0]
    made = set()

    def write(name, lines):
        made.add(name)
        set_records(lab, name, lines)
    yield write
    for name in made:
        os.unlink(os.path.join(lab.dir, "dns", "hosts.d", name))
