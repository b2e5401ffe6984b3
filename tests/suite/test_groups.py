"""scripts/test's parallel run: every test of a file lands on one xdist worker (its module fixtures are built once),
and all of tests/e2e is one group (its one lab): tests/support/groups.py."""

import os
import re
import subprocess
import sys

from tests.support import TOP
from tests.support.groups import group_of

FILES = ["tests/suite/test_prefixes.py", "tests/unit/test_elements_digest.py", "tests/unit/test_elements_holding.py"]


def test_each_file_runs_on_one_worker():
    env = dict(os.environ, PYTEST_ADDOPTS="")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "3", "--dist",
                           "loadgroup", "--no-loadscope-reorder"] + FILES, cwd=TOP, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers = {}
    for worker, nodeid in re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)", proc.stdout, re.M):
        workers.setdefault(nodeid.split("::")[0], set()).add(worker)
    assert sorted(workers) == sorted(FILES)
    assert {path: len(seen) for path, seen in workers.items()} == {path: 1 for path in FILES}


def test_the_groups_are_files_and_all_of_e2e():
    assert [group_of(n) for n in ("tests/e2e/test_ui.py::test_a", "tests/e2e/test_holds.py::test_b[1]",
                                  "tests/unit/test_support.py::test_c", "tests/chaos/test_chaos.py::test_d")] == [
        "tests/e2e", "tests/e2e", "tests/unit/test_support.py", "tests/chaos/test_chaos.py"]


def test_every_collected_test_has_its_own_node_id():
    # xdist runs items by node id: two items with one id (schemathesis gives every API operation its function's
    # id) would run as one, and the parallel suite would silently skip the rest.
    env = dict(os.environ, PYTEST_ADDOPTS="")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "tests/fuzz/test_api_fuzz.py"], cwd=TOP, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    operations = [i for i in ids if "test_every_operation_answers_within_its_documented_schema[" in i]
    assert (len(ids) == len(set(ids)), len(operations) > 1) == (True, True), ids
