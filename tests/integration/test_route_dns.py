"""The route role's og_route_dns for real: ansible-playbook runs the role through the netns connection against a
client namespace, whose resolver then asks the test's own DNS servers on two gateway namespaces.

The client (198.51.100.2 on a bridge) shares a LAN with gateway A (198.51.100.1) and gateway B (198.51.100.3);
each gateway runs tests/support/dnsauth.py on port 53 with answers of its own, so a lookup shows which gateway
answered. `ip netns exec` shows /etc/netns/NAME/resolv.conf as /etc/resolv.conf only when that file exists:
every test checks that the machine's own /etc/resolv.conf is unchanged.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support import BIN, TOP, nslib
from tests.support.ansiblelib import Ansible
from tests.support.nslib import link

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

GW_A, GW_B = "198.51.100.1", "198.51.100.3"
NAME = "www.partner.example"
ANSWER = {GW_A: "203.0.113.10", GW_B: "203.0.113.11"}
ORIGINAL = "# the host's own\nnameserver 192.0.2.53\nsearch corp.example\noptions ndots:2 timeout:5\n"
PLAY = """
- hosts: client
  gather_facts: false
  roles:
    - role: outputguard.egress.route
"""


def machine_resolv_conf():
    """The machine's own resolver file, as bytes (the symlink's target when it is one)."""
    with open("/etc/resolv.conf", "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


class Lan:
    """client -- br0 -- gateway A, gateway B, each gateway with a DNS server the test controls."""

    def __init__(self, make, tmp_path):
        self.tmp = tmp_path
        self.client = make("rdc")
        self.gw = {GW_A: make("rda"), GW_B: make("rdb")}
        self.client.ip("link", "add", "br0", "type", "bridge")
        self.client.ip("addr", "add", "198.51.100.2/24", "dev", "br0")
        self.client.ip("link", "set", "br0", "up")
        self.auth = {}
        for i, address in enumerate((GW_A, GW_B)):
            link(self.client, "port%d" % i, None, self.gw[address], "lan0", address + "/24")
            self.client.ip("link", "set", "port%d" % i, "master", "br0")
        self.client.ip("route", "add", "default", "via", "198.51.100.254")
        self.netns_dir = "/etc/netns/" + self.client.name
        self.netns_file = os.path.join(self.netns_dir, "resolv.conf")

    def start_dns(self, address):
        zone = str(self.tmp / ("zone-%s.json" % address))
        with open(zone, "w") as fh:
            json.dump({NAME: {"A": {"ttl": 30, "values": [ANSWER[address]]}}}, fh)
        log = str(self.tmp / ("dnsauth-%s.log" % address))
        self.auth[address] = self.gw[address].popen(
            [sys.executable, "-m", "tests.support.dnsauth", "--zone", zone, "--listen", address, "--port", "53"],
            cwd=TOP, stderr=open(log, "a"))
        nslib.wait_ready(lambda: "dnsauth: ready" in open(log).read(), self.auth[address], "dnsauth", log)

    def stop_dns(self, address):
        self.auth[address].kill()
        self.auth[address].wait(timeout=10)

    def give_resolv_conf(self, text):
        os.makedirs(self.netns_dir, exist_ok=True)
        with open(self.netns_file, "w") as fh:
            fh.write(text)

    def remove_resolv_conf(self):
        shutil.rmtree(self.netns_dir, ignore_errors=True)
        try:
            os.rmdir("/etc/netns")
        except OSError:
            pass

    def lookup(self):
        """The IPv4 addresses the client's own resolver (glibc, through /etc/resolv.conf) gives for NAME."""
        proc = self.client.run(["getent", "ahostsv4", NAME], check=False, timeout=30)
        return sorted({line.split()[0] for line in proc.stdout.splitlines() if line.strip()})


@pytest.fixture
def lan(netns_factory, tmp_path):
    made = Lan(netns_factory, tmp_path)
    before = machine_resolv_conf()
    yield made
    made.remove_resolv_conf()
    assert machine_resolv_conf() == before, "the machine's own /etc/resolv.conf changed"


@pytest.fixture
def play(lan, tmp_path):
    runner = Ansible(tmp_path)
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "inventory.yml").write_text(json.dumps({"all": {"hosts": {"client": {
        "ansible_connection": "outputguard.egress.netns", "ansible_host": lan.client.name,
        "ansible_python_interpreter": sys.executable}}}}))
    env = dict(runner.env, ANSIBLE_REMOTE_TMP=str(tmp_path / "remote"))
    base = {"og_route_gateways": [GW_A, GW_B], "og_route_daemon": False, "og_install_package": False,
            "og_route_dns_state_dir": str(tmp_path / "state")}

    def run(**extra):
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps(dict(base, **extra)))
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                               str(tmp_path / "play.yml"), "-e", "@%s" % vars_file],
                              env=env, capture_output=True, text=True, timeout=300, check=False)
        out = proc.stdout + proc.stderr
        match = re.search(r"^client\s+:\s+(.*)$", proc.stdout, re.M)
        assert match is not None, out
        recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
        return recap, out

    return run


def test_lookups_go_to_the_gateways_fail_over_and_the_original_comes_back(lan, play):
    lan.give_resolv_conf(ORIGINAL)
    lan.start_dns(GW_A)
    lan.start_dns(GW_B)
    assert lan.lookup() == []  # 192.0.2.53 answers nothing: the lookup below is the role's doing

    recap, out = play(og_route_dns=True)
    assert recap["failed"] == 0 and recap["changed"] > 0, out
    written = open(lan.netns_file).read()
    assert re.findall(r"^nameserver (\S+)$", written, re.M) == [GW_A, GW_B], written
    assert "search corp.example\n" in written, written  # the host's search line is kept
    # Ours replace the host's timeout; the host's other options are kept.
    assert "options timeout:2 attempts:2 ndots:2\n" in written, written
    assert lan.lookup() == [ANSWER[GW_A]]  # the primary answers first

    recap, out = play(og_route_dns=True)
    assert recap["failed"] == 0 and recap["changed"] == 0, out
    assert open(lan.netns_file).read() == written

    lan.stop_dns(GW_A)
    assert lan.lookup() == [ANSWER[GW_B]]  # the standby answers when the primary's DNS is gone

    recap, out = play(og_route_dns=False)
    assert recap["failed"] == 0 and recap["changed"] > 0, out
    assert open(lan.netns_file).read() == ORIGINAL
    recap, out = play(og_route_dns=False)
    assert recap["failed"] == 0 and recap["changed"] == 0, out


def test_own_servers_and_search_replace_the_hosts(lan, play):
    lan.give_resolv_conf(ORIGINAL)
    lan.start_dns(GW_B)
    recap, out = play(og_route_dns=True, og_route_dns_servers=[GW_B], og_route_dns_search=["lab.example"],
                      og_route_dns_options=["attempts:1"])
    assert recap["failed"] == 0, out
    written = open(lan.netns_file).read()
    assert re.findall(r"^nameserver (\S+)$", written, re.M) == [GW_B], written
    assert "search lab.example\n" in written and "corp.example" not in written, written
    assert "options attempts:1 ndots:2 timeout:5\n" in written, written
    assert lan.lookup() == [ANSWER[GW_B]]


def test_refuses_without_the_namespaces_own_resolv_conf(lan, play):
    recap, out = play(og_route_dns=True)
    assert recap["failed"] == 1, out
    assert "/etc/netns/%s/resolv.conf does not exist" % lan.client.name in out, out
    assert "resolver of the whole machine" in out, out
    assert not os.path.exists(lan.netns_file)
    # Off needs no file: nothing to put back.
    recap, out = play(og_route_dns=False)
    assert recap["failed"] == 0, out
    assert not os.path.exists(lan.netns_file)


def test_more_than_three_servers_is_refused_with_the_limit(lan, play):
    lan.give_resolv_conf(ORIGINAL)
    recap, out = play(og_route_dns=True, og_route_dns_servers=["198.51.100.%d" % i for i in (1, 3, 5, 7)])
    assert recap["failed"] == 1, out
    assert "at most 3 nameservers" in out, out
    assert open(lan.netns_file).read() == ORIGINAL
