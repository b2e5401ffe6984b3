import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import nslib  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    # Whatever happened, no test namespace survives the run.
    if "serverlib" in sys.modules:
        sys.modules["serverlib"].stop_all()
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
    """A private PostgreSQL cluster for the session (tests/pglib.py), removed at the end."""
    import pglib
    if os.geteuid() != 0 or not pglib.available():
        pytest.skip("PostgreSQL tests need root and Debian's postgresql package (scripts/setup installs it)")
    cluster = pglib.Postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def mariadb():
    """A private MariaDB server for the session (tests/mylib.py), removed at the end."""
    import mylib
    if os.geteuid() != 0 or not mylib.available():
        pytest.skip("MariaDB tests need root and Debian's mariadb-server-core (scripts/setup installs it)")
    server = mylib.MariaDB()
    yield server
    server.destroy()
