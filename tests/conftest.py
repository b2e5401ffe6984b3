import os

import pytest

from tests.support import mylib, nslib, pglib, serverlib
from tests.support.groups import SLOW_FIRST, GroupScheduling, group_of

# SIGTERM and SIGHUP tear the fixtures down like Ctrl-C (namespaces, database servers, daemons never stay behind).
pytest_plugins = ["tests.support.signals"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # scripts/test asks for --dist loadgroup; the other modes stay xdist's own.
    if config.getoption("dist") == "loadgroup":
        return GroupScheduling(config, log)
    return None


def pytest_collection_modifyitems(config, items):
    # Only in xdist workers, whose order the scheduler follows; a one-process run keeps the order of the files.
    if hasattr(config, "workerinput"):
        rank = {group: n for n, group in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


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
    if os.geteuid() != 0 or not pglib.available():
        pytest.skip("PostgreSQL tests need root and Debian's postgresql package (scripts/setup installs it)")
    cluster = pglib.Postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def mariadb():
    """A private MariaDB server for the session (tests/support/mylib.py), removed at the end."""
    if os.geteuid() != 0 or not mylib.available():
        pytest.skip("MariaDB tests need root and Debian's mariadb-server-core (scripts/setup installs it)")
    server = mylib.MariaDB()
    yield server
    server.destroy()
