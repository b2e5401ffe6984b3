"""A pytest plugin: SIGTERM and SIGHUP end a run the way Ctrl-C does, so every fixture's teardown still runs.

By default those signals kill pytest at once: the lab's namespaces, the private database servers and the
daemons a fixture started would stay behind (seen when a run was stopped from outside). As a KeyboardInterrupt,
pytest unwinds the running test and tears down every fixture before it exits. Loaded by tests/conftest.py, in
the controller and in each pytest-xdist worker; a second signal during the teardown is ignored so the teardown
can finish (SIGKILL still ends everything).
"""

import signal

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by a signal."""


def _stop(signum, _frame):
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped("stopped by signal %d: tearing down the fixtures" % signum)


def pytest_configure(config):
    for sig in SIGNALS:
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            try:
                signal.signal(sig, _stop)
            except ValueError:  # not the main thread: the process that owns the signals handles them
                return
