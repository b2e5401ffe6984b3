"""The seam to the kernel learn sets: og_kernel.og_learn.LearnSets when present, else ipset restore.

The forwarder calls learner.add([(address, port or None, timeout)]) once per answer, before the answer goes out.
Until og_kernel.og_learn lands (owner dnskernel, the contract in docs/dns.md), IpsetLearner does the same adds
with one `ipset restore -exist` per answer into og-learn{4,6} / og-learnp{4,6}.
"""

from __future__ import annotations

import ipaddress
import subprocess

try:
    from og_kernel.og_learn import LearnError, LearnSets
except ImportError:  # until the kernel part (og_learn) is merged; IpsetLearner stands in
    LearnSets = None

    class LearnError(Exception):
        """A learn set that is missing or refused an add."""


def element(address, port):
    """(set name, ipset element text) of one learned item; port as "443/tcp" or "8000-8010/tcp" or None."""
    family = ipaddress.ip_address(address).version
    if port is None:
        return "og-learn%d" % family, address
    number, dummy, proto = str(port).partition("/")
    return "og-learnp%d" % family, "%s,%s:%s" % (address, proto or "tcp", number)


class IpsetLearner(object):
    """LearnSets' add() over `ipset restore -exist` (one process per answer)."""

    def __init__(self, ipv6=False):
        self.ipv6 = ipv6
        families = (4, 6) if ipv6 else (4,)
        for name in ["og-learn%d" % v for v in families] + ["og-learnp%d" % v for v in families]:
            proc = subprocess.run(["ipset", "list", "-n", name], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LearnError("the learn set %s is missing (%s); the gateway's firewall policy creates it, "
                                 "apply it before starting og-dns" % (name, proc.stderr.strip()))

    def add(self, items):
        lines, skipped = [], 0
        for address, port, timeout in items:
            if ipaddress.ip_address(address).version == 6 and not self.ipv6:
                skipped += 1
                continue
            name, text = element(address, port)
            lines.append("add %s %s timeout %d\n" % (name, text, int(timeout)))
        if lines:
            proc = subprocess.run(["ipset", "restore", "-exist"], input="".join(lines), capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                raise LearnError("ipset restore refused %r: %s" % ("".join(lines)[:200], proc.stderr.strip()))
        return len(lines)

    def close(self):
        pass


def open_learner(ipv6=False):
    """The real LearnSets when og_kernel.og_learn is installed, else IpsetLearner."""
    if LearnSets is not None:
        return LearnSets(ipv6=ipv6)
    return IpsetLearner(ipv6=ipv6)
