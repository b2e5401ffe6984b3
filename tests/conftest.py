import os

import pytest

from tests.support import mylib, nslib, pglib, serverlib


# The groups that take longest, longest first: pytest-xdist hands groups out in collection order, so these start
# at once and the many short ones fill the other workers around them (scripts/test runs --dist loadgroup).
SLOW_FIRST = ["tests/e2e", "tests/collection/test_molecule.py", "tests/chaos/test_chaos.py",
              "tests/collection/test_runner.py", "tests/collection/test_gates.py", "tests/server/test_resolver.py"]


def _group(item):
    """The xdist group of a test: the whole of tests/e2e shares the lab (one session fixture), others their file."""
    path = item.nodeid.split("::")[0]
    return "tests/e2e" if path.startswith("tests/e2e/") else path


def pytest_collection_modifyitems(config, items):
    # A file's module-scoped fixtures (a lab, a server) are built once only if its tests stay on one worker.
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    if hasattr(config, "workerinput"):
        rank = {group: n for n, group in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(_group(item), len(rank)))


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
