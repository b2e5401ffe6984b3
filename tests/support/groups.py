"""How scripts/test's parallel run groups the suite: each group runs on one pytest-xdist worker."""

from xdist.scheduler import LoadScopeScheduling

# The groups that take longest, longest first: the scheduler hands groups out in collection order, so these start
# at once and the many short ones fill the other workers around them.
SLOW_FIRST = ["tests/e2e", "tests/collection/test_molecule.py", "tests/chaos/test_chaos.py",
              "tests/collection/test_runner.py", "tests/collection/test_gates.py", "tests/server/test_resolver.py"]


def group_of(nodeid):
    """The group a test runs in: the whole of tests/e2e shares the lab (one session fixture), others their file."""
    path = nodeid.split("::")[0]
    return "tests/e2e" if path.startswith("tests/e2e/") else path


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the suite's groups: a group's tests all go to one worker, so its module and
    session fixtures (a lab, a server) are built once. Read from the node id, not from xdist_group marks, which
    xdist 3.8 no longer honours under pytest 9.2 (pytest-xdist issue 1386)."""

    def _split_scope(self, nodeid):
        return group_of(nodeid)
