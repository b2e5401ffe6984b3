"""A three-namespace topology for gateway tests: client -> gateway -> internet, all made by the test."""

import os
import sys

from tests.support import TOP
from tests.support.nslib import link, wait_until

HTTP = os.path.join(TOP, "scripts", "lab_http.py")
SERVICES = ["198.51.100.10:80", "198.51.100.10:8443", "198.51.100.20:80", "203.0.113.10:80"]
CLIENT_NET = "10.88.0.0/24"


class GatewayTopology:
    """client (10.88.0.2) -> gw (10.88.0.1 | og-out 203.0.113.2) -> inet (203.0.113.1 + services)."""

    def __init__(self, make, tag):
        self.client = make(tag + "c")
        self.gw = make(tag + "gw")
        self.inet = make(tag + "i")
        link(self.client, "eth0", "10.88.0.2/24", self.gw, "lan0", "10.88.0.1/24")
        link(self.gw, "og-out", "203.0.113.2/24", self.inet, "eth0", "203.0.113.1/24")
        self.client.ip("route", "add", "default", "via", "10.88.0.1")
        self.gw.ip("route", "add", "default", "via", "203.0.113.1")
        self.gw.sysctl("net.ipv4.ip_forward", 1)
        for svc in SERVICES:
            self.inet.ip("addr", "replace", svc.split(":", maxsplit=1)[0] + "/32", "dev", "lo")
        self.http = self.inet.popen([sys.executable, HTTP] + SERVICES)
        wait_until(lambda: self.inet.run(["curl", "-s", "-m", "1", "http://198.51.100.10/"], check=False).returncode == 0,
                   timeout=10, what="internet HTTP services")

    def gw_python(self, code, *args):
        """Run Python code inside the gateway namespace with the project importable."""
        env = dict(os.environ, PYTHONPATH=TOP)
        return self.gw.run([sys.executable, "-c", code] + list(args), env=env)
