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
        return {"msg": self.msg, "cmd": self.cmd, "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr}


class Result(object):
    __slots__ = ("rc", "stdout", "stderr")

    def __init__(self, rc, stdout, stderr):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def missing_binary_message(name):
    package = PACKAGES.get(name, name)
    return "%s is missing. Is the package %s installed?" % (name, package)


class CommandRunner(object):
    """Runs argv lists with LC_ALL=C; iptables calls always wait for the xtables lock (-w)."""

    def __init__(self):
        self.env = dict(os.environ, LC_ALL="C", LANG="C")

    def which(self, name):
        return shutil.which(name, path=self.env.get("PATH", os.defpath) + ":/usr/sbin:/sbin")

    def __call__(self, argv, stdin=None, check=True):
        argv = list(argv)
        if argv[0] in ("iptables", "ip6tables") and "-w" not in argv:
            argv.insert(1, "-w")
        if argv[0] in ("iptables-restore", "ip6tables-restore") and "-w" not in argv:
            argv.insert(1, "-w")
        binary = self.which(argv[0])
        if binary is None:
            raise CommandError(missing_binary_message(argv[0]), cmd=argv, rc=127)
        try:
            proc = subprocess.run([binary] + argv[1:], input=stdin, capture_output=True, text=True, env=self.env)
        except OSError as exc:
            raise CommandError("could not run %s: %s" % (argv[0], exc), cmd=argv, rc=127)
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
    """Raise when OG_REFUSE_ROOT_NETNS=1 and we are in the root namespace (tests and the lab set it)."""
    if os.environ.get("OG_REFUSE_ROOT_NETNS") == "1" and in_root_netns():
        raise CommandError(
            "refusing to change %s in the machine's root network namespace (OG_REFUSE_ROOT_NETNS=1); "
            "run this inside a network namespace (ip netns exec NAME ...)" % what)
