import os

import pytest

from tests.support import mylib, nslib, pglib, serverlib


def pytest_sessionfinish(session, exitstatus):
    # Whatever happened, no test namespace survives the run.
    serverlib.stop_all()
    if os.geteuid() == 0:
        nslib.cleanup_all()


@pytest.fixture
def netns_factory():
    """Create namespaces named ogt-<suffix>; all are deleted after the test, pass or fail."""
    made = []

    def make(suffix):
        ns = nslib.Netns(nslib.PREFIX + suffix)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL cluster for the session (tests/support/pglib.py), removed at the end."""
    from tests.support import pglib
    if os.geteuid() != 0 or not pglib.available():
        pytest.skip("PostgreSQL tests need root and Debian's postgresql package (scripts/setup installs it)")
    cluster = pglib.Postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def mariadb():
    """A private MariaDB server for the session (tests/support/mylib.py), removed at the end."""
    from tests.support import mylib
    if os.geteuid() != 0 or not mylib.available():
        pytest.skip("MariaDB tests need root and Debian's mariadb-server-core (scripts/setup installs it)")
    server = mylib.MariaDB()
    yield server
    server.destroy()
