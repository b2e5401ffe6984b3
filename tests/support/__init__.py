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
