"""Driving the namespace lab (scripts/lab) from tests: its own prefix, folder and UI port per run."""

import contextlib
import os
import re
import subprocess

import pytest
import requests

from tests.support import TOP, free_port
from tests.support.nslib import Netns, tcp_probe

LAB_SCRIPT = os.path.join(TOP, "scripts", "lab")


class Lab:
    """A running lab with its own namespace prefix, folder and UI port."""

    def __init__(self, prefix, directory, ui_port, ipv6=False):
        self.prefix = prefix
        self.dir = directory
        self.ui_port = ui_port
        self.ipv6 = ipv6
        self.env = dict(os.environ, OG_LAB_PREFIX=prefix, OG_LAB_DIR=directory, OG_LAB_UI_PORT=str(ui_port),
                        OG_LAB_IPV6="1" if ipv6 else "0")
        self.url = "http://127.0.0.1:%d" % ui_port

    def lab(self, *args, check=True):
        proc = subprocess.run([LAB_SCRIPT] + list(args), env=self.env, capture_output=True, text=True, timeout=900,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError("scripts/lab %s failed rc=%d\n%s\n%s" % (
                " ".join(args), proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:]))
        return proc

    def ns(self, host):
        return self.prefix + host

    def secret(self, key):
        with open(os.path.join(self.dir, "secrets.yml")) as fh:
            return re.search(r'^%s: "([^"]+)"' % key, fh.read(), re.M).group(1)

    def api(self, method, path, token="admin", **kwargs):
        headers = kwargs.pop("headers", {})
        if token == "admin":
            token = self.secret("og_server_admin_token")
        if token:
            headers["Authorization"] = "Bearer " + token
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


@contextlib.contextmanager
def running_lab(prefix, directory):
    """A lab of its own (leftovers of an earlier crashed run removed first), torn down whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    the_lab = Lab(prefix, directory, free_port())
    the_lab.lab("down", check=False)
    try:
        the_lab.lab("create")
        yield the_lab
    finally:
        the_lab.lab("down", check=False)


def recap(output):
    """{host: {'ok': n, 'changed': n, 'failed': n, ...}} from ansible-playbook's PLAY RECAP."""
    result = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            result[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return result


class LabHost(Netns):
    """A lab namespace made by scripts/lab: run things in it, but never create or delete it here."""

    def __init__(self, name):  # noqa: super().__init__ would create the namespace
        self.name = name
        self.procs = []


def probe(lab, host, address, port=80):
    """ok / refused / reset / timeout of a TCP connection from a lab host (1 s budget)."""
    return tcp_probe(LabHost(lab.ns(host)), address, port, timeout=1.0)


def gateway_elements(lab, name="og-allow4"):
    """The members of one of gw1's kernel sets."""
    out = LabHost(lab.ns("gw1")).run(["ipset", "list", name]).stdout
    return sorted(line.split()[0] for line in out.split("Members:")[1].splitlines() if line.strip())
