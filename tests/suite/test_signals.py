"""A run stopped by SIGTERM still tears its fixtures down (tests/support/signals.py)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

INNER = textwrap.dedent('''
    import os, time
    import pytest

    @pytest.fixture
    def resource():
        yield
        open(os.environ["OG_MARK_DIR"] + "/torn-down", "w").close()

    def test_waits(resource):
        open(os.environ["OG_MARK_DIR"] + "/started", "w").close()
        time.sleep(600)
''')


def _run_and_stop(tmp_path, plugin, sig):
    (tmp_path / "test_inner.py").write_text(INNER)
    marks = tmp_path / "marks"
    marks.mkdir()
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            str(tmp_path / "test_inner.py")]
    if plugin:
        args[3:3] = ["-p", "tests.support.signals"]
    env = dict(os.environ, OG_MARK_DIR=str(marks), PYTHONPATH=TOP)
    env.pop("PYTEST_XDIST_WORKER", None)
    # The child starts with the signal's default action, whatever this run inherited: under nohup SIGHUP is
    # ignored, and the plugin rightly leaves an ignored signal ignored.
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (marks / "started").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return (marks / "torn-down").exists(), proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_ends_the_run_after_the_fixtures_are_torn_down(tmp_path, sig):
    torn_down, code = _run_and_stop(tmp_path, plugin=True, sig=sig)
    assert torn_down
    assert code == 2  # pytest's "interrupted"


def test_without_the_plugin_sigterm_leaves_the_fixture_behind(tmp_path):
    # The control: what the plugin prevents really happens without it.
    torn_down, code = _run_and_stop(tmp_path, plugin=False, sig=signal.SIGTERM)
    assert not torn_down
    assert code == -signal.SIGTERM
