"""What the test suites (and bench/) share: namespaces, the lab, real server, agent and database processes.

Import by package (`from tests.support.nslib import Netns`); pytest puts the repository on sys.path
(pyproject.toml `pythonpath`), bench/benchlib.py does the same for the benchmarks.
"""

import os
import socket
import sys

# The repository's top folder, where scripts/, playbooks/ and .venv/ are.
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The venv's bin folder: og-server, og-gateway-agent, ansible and friends installed next to this Python.
BIN = os.path.dirname(sys.executable)


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The namespace prefixes a run uses, each four characters ending in '-', and their defaults. Two runs on one
# machine set them apart; OG_TEST_PREFIX is moreover made distinct per pytest-xdist worker (worker_prefix).
PREFIX_DEFAULTS = {"OG_TEST_PREFIX": "ogt-", "OG_E2E_PREFIX": "oge-", "OG_RUNNER_PREFIX": "ogr-",
                   "OG_MOLECULE_PREFIX": "ogm-", "OG_MOLECULE_SECOND_PREFIX": "ogn-"}
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class PrefixError(Exception):
    """A namespace prefix that is malformed or shared by two uses."""


def _given(variable):
    value = os.environ.get(variable, PREFIX_DEFAULTS[variable])
    if len(value) != 4 or not value.endswith("-") or value[2] not in _ALPHABET:
        raise PrefixError("%s=%r: give four characters ending in '-', the third a lower-case letter or digit, "
                          "e.g. ot1-" % (variable, value))
    return value


def worker_prefix(prefix, worker):
    """The prefix of pytest-xdist worker `worker` (gw0, gw1, ...): its third character moved on by the worker's number
    (ogt- gw0 -> ogt-, gw1 -> ogu-), so that concurrent workers never make namespaces of the same name."""
    number = int(worker[2:]) if worker.startswith("gw") else 0
    return prefix[:2] + _ALPHABET[(_ALPHABET.index(prefix[2]) + number) % len(_ALPHABET)] + "-"


def prefixes(worker=None):
    """{variable: prefix} of this process; PrefixError when malformed or when two uses would share one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    found = {variable: _given(variable) for variable in PREFIX_DEFAULTS}
    found["OG_TEST_PREFIX"] = worker_prefix(found["OG_TEST_PREFIX"], worker)
    by_prefix = {}
    for variable, prefix in found.items():
        if prefix in by_prefix:
            raise PrefixError("%s and %s would both use the namespace prefix %r (worker %s); set them apart, "
                              "e.g. OG_TEST_PREFIX=ot1- OG_E2E_PREFIX=oe1- (a worker N adds N to OG_TEST_PREFIX's "
                              "third character)" % (by_prefix[prefix], variable, prefix, worker or "-"))
        by_prefix[prefix] = variable
    return found
