"""Network namespaces as test hosts: create them, run things inside, and always remove them.

Every namespace a test makes is named with the prefix ``ogt-`` (or ``$OG_TEST_PREFIX``, four characters, so
that two runs on one machine use different names; each pytest-xdist worker has its own, see
tests/support/__init__.py); ``cleanup_all()`` (called by the
conftest at session end, and usable by hand) kills their processes and deletes them, so a failed test
never leaves one behind. Nothing here touches the root namespace: links are created directly inside
the namespaces.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from tests.support import PrefixError, prefixes

try:
    PREFIX = prefixes()["OG_TEST_PREFIX"]
except PrefixError as exc:
    raise SystemExit(str(exc)) from None
# The namespaces this process made: the session's final clean-up deletes these (and only these, so that two
# test runs on one machine never delete each other's).
CREATED = set()
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(argv, check=True, input=None, timeout=60):
    """Run a command in the root namespace's shell (only ip/netns management is done this way)."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed rc=%d: %s%s" % (shlex.join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def namespaces():
    out = sh(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_ns_pids(name, sig=signal.SIGKILL):
    out = sh(["ip", "netns", "pids", name], check=False).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), sig)
        except ProcessLookupError:
            pass


def delete_ns(name):
    kill_ns_pids(name)
    sh(["ip", "netns", "del", name], check=False)
    # Processes that survive a moment (zombies being reaped) are retried once.
    if name in namespaces():
        time.sleep(0.2)
        kill_ns_pids(name)
        sh(["ip", "netns", "del", name], check=False)


def cleanup_all(prefix=PREFIX, only_ours=True):
    """Delete the test namespaces this process made (every ogt-* one with only_ours=False)."""
    for name in namespaces():
        if name.startswith(prefix) and (name in CREATED or not only_ours):
            delete_ns(name)
    CREATED.clear()


class Netns:
    """One network namespace with loopback up."""

    def __init__(self, name):
        assert name.startswith(PREFIX) and len(name) <= 15, name
        self.name = name
        self.procs = []
        if name in namespaces():
            delete_ns(name)
        sh(["ip", "netns", "add", name])
        CREATED.add(name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args, check=True):
        return sh(["ip", "-n", self.name] + list(args), check=check)

    def run(self, argv, check=True, input=None, timeout=60, env=None):
        full = ["ip", "netns", "exec", self.name] + list(argv)
        proc = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError("%s failed rc=%d: %s%s" % (shlex.join(full), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def popen(self, argv, **kwargs):
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", self.name] + list(argv), **kwargs)
        self.procs.append(proc)
        return proc

    def sysctl(self, key, value):
        self.run(["sysctl", "-q", "-w", "%s=%s" % (key, value)])

    def delete(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        delete_ns(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.delete()


def link(a, a_if, a_cidr, b, b_if, b_cidr=None):
    """A veth pair between two namespaces, addressed and up."""
    sh(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name])
    for ns, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
        if cidr:
            for c in ([cidr] if isinstance(cidr, str) else cidr):
                ns.ip("addr", "add", c, "dev", ifname, *(["nodad"] if ":" in c else []))
        ns.ip("link", "set", ifname, "up")


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll until predicate() is truthy; return its value or raise AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# How long a real service (a server, a database, a DNS server) may take to say it is ready. Generous on purpose:
# the wait ends as soon as the service answers, and a loaded CI machine can take tens of seconds to start one.
READY_TIMEOUT = float(os.environ.get("OG_TEST_READY_TIMEOUT", "180"))


def wait_ready(probe, proc, what, log=None, timeout=READY_TIMEOUT):
    """Wait until a started service answers `probe()`; fail at once, with its log, if its process `proc` died."""
    def tail():
        if log is None:
            return ""
        try:
            with open(log) as fh:
                return "\n" + fh.read()[-3000:]
        except OSError:
            return ""
    wait_until(lambda: probe() or proc.poll() is not None, timeout=timeout, interval=0.2, what=what)
    if proc.poll() is not None:
        raise AssertionError("%s: the process exited with rc=%s before it was ready%s" % (what, proc.returncode, tail()))


def tcp_probe(ns, host, port, timeout=2.0):
    """Try one TCP connection from inside ns; return 'ok', 'refused', 'reset', 'timeout' or 'unreachable'."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
        "s.settimeout(float(sys.argv[3]))\n"
        "try:\n"
        " s.connect((sys.argv[1],int(sys.argv[2]))); print('ok')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except ConnectionResetError: print('reset')\n"
        "except socket.timeout: print('timeout')\n"
        "except OSError as e: print('unreachable' if e.errno in (101,113,110) else 'error:%d'%e.errno)\n"
    )
    out = ns.run([sys.executable, "-c", code, host, str(port), str(timeout)], check=False, timeout=timeout + 10)
    return out.stdout.strip() or ("error:" + out.stderr.strip()[-200:])


# ---- threads inside a namespace ----------------------------------------------------------------------------
def enter_netns(name):
    """Move the calling thread (only it) into network namespace `name`."""
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into %s failed" % name)
    finally:
        os.close(fd)


def in_netns(name, fn, *args, **kwargs):
    """fn(*args, **kwargs) run by a short-lived thread inside namespace `name`; its result or its exception."""
    result = {}

    def work():
        try:
            enter_netns(name)
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
