# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the kernel layer runs commands: argv lists, C locale, errors that carry everything."""

from __future__ import annotations

import os
import shutil
import subprocess

# Which Debian package provides each binary, for error messages that say what to install.
PACKAGES = {
    "ipset": "ipset",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "iptables-restore": "iptables",
    "ip6tables-restore": "iptables",
    "conntrack": "conntrack",
}

# Commands that take the xtables lock: they always wait for it instead of failing at once.
WAITING = ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore")

# sbin folders are searched too: Ansible and cron often run with a PATH without them.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class CommandError(Exception):
    """A command failed; carries cmd, rc, stdout and stderr for fail_json and logs."""

    def __init__(self, msg, cmd=None, rc=None, stdout="", stderr=""):
        super(CommandError, self).__init__(msg)
        self.msg = msg
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def as_dict(self):
        """The keys a failed Ansible task returns: msg, cmd, rc, stdout, stderr."""
        return {"msg": self.msg, "cmd": self.cmd, "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr}


class Result(object):
    """What a finished command returned."""

    __slots__ = ("rc", "stdout", "stderr")

    def __init__(self, rc, stdout, stderr):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        return "Result(rc=%r, stdout=%r, stderr=%r)" % (self.rc, self.stdout, self.stderr)


def missing_binary_message(name):
    """'ipset is missing. Is the package ipset installed?'"""
    return "%s is missing. Is the package %s installed?" % (name, PACKAGES.get(name, name))


def command_line(argv):
    """The argv as it is really run: xtables commands always get -w right after the binary."""
    argv = [str(a) for a in argv]
    if argv and argv[0] in WAITING and "-w" not in argv:
        argv.insert(1, "-w")
    return argv


class CommandRunner(object):
    """Runs argv lists with LC_ALL=C and returns Result; raises CommandError when check and rc != 0.

    Anything with the same call signature and a which() method can stand in for it (tests use fakes).
    """

    def __init__(self, timeout=120):
        self.env = dict(os.environ, LC_ALL="C", LANG="C")
        self.timeout = timeout

    def which(self, name):
        """Full path of a binary, or None when it is not installed."""
        path = os.pathsep.join([self.env.get("PATH", os.defpath)] + list(SBIN))
        return shutil.which(name, path=path)

    def __call__(self, argv, stdin=None, check=True):
        argv = command_line(argv)
        binary = self.which(argv[0])
        if binary is None:
            raise CommandError(missing_binary_message(argv[0]), cmd=argv, rc=127)
        try:
            proc = subprocess.run([binary] + argv[1:], input=stdin, capture_output=True, text=True, check=False,
                                  env=self.env, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandError("could not run %s: %s" % (argv[0], exc), cmd=argv, rc=127) from exc
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError("%s failed (rc=%d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()),
                               cmd=argv, rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        return result


def in_root_netns():
    """True when this process shares the network namespace of PID 1 (the machine's own)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def refuse_root_netns(what):
    """Raise CommandError when OG_REFUSE_ROOT_NETNS=1 and this process is in the machine's own namespace.

    The project's tests and lab set the variable so that a mistake can never change the routes, iptables rules
    or ipsets the machine itself depends on.
    """
    if os.environ.get("OG_REFUSE_ROOT_NETNS") == "1" and in_root_netns():
        raise CommandError("refusing to change %s in the machine's root network namespace (OG_REFUSE_ROOT_NETNS=1); "
                           "run this inside a network namespace (ip netns exec NAME)" % what)
