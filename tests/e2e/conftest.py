"""The namespace lab as a fixture: built once for the e2e tests, torn down even when they fail."""

import os

import pytest

from lablib import Lab, free_port


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    the_lab = Lab("ogt-e-", "/run/og-test-lab-%d" % os.getpid(), free_port())
    the_lab.lab("down", check=False)
    try:
        the_lab.lab("create")
        yield the_lab
    finally:
        the_lab.lab("down", check=False)
