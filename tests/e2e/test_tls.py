"""The lab over TLS by default: site.yml's server role makes a CA and the server's certificate, the gateways follow it
over wss:// verifying it with that CA, og_entry and og_entry_info verify it too, and a renewed certificate is
served without a restart while the gateways stay connected.

Everything that talks to the server runs inside the lab's namespaces (c1 is a client on the LAN).
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.support.lablib import TOP, LabHost, probe
from tests.support.nslib import wait_until
from test_restart import main_pid, site

SERVER = "10.77.0.10"
URL = "wss://%s:8080/ws/gateway" % SERVER
ALLOWED = "198.51.100.10"
BIN = os.path.dirname(sys.executable)
# Reruns site.yml on the server twice (about a minute each on a busy machine).
pytestmark = pytest.mark.timeout(1200)


def ca_file(lab):
    return os.path.join(lab.dir, "tls", "ca.crt")


def agent_log(lab, gw):
    with open(os.path.join(lab.dir, "hosts", gw, "var", "log", "outputguard", "og-gateway-agent.log")) as fh:
        return fh.read()


def served(lab, host, cafile):
    """(serial, subjectAltName) of the certificate the server presents, verified with cafile from a lab host."""
    code = ("import json,socket,ssl,sys\n"
            "c=ssl.create_default_context(cafile=sys.argv[1])\n"
            "s=c.wrap_socket(socket.create_connection((sys.argv[2],8080),5),server_hostname=sys.argv[2])\n"
            "p=s.getpeercert();print(json.dumps([p['serialNumber'],[v for _k,v in p['subjectAltName']]]))\n")
    out = LabHost(lab.ns(host)).run([sys.executable, "-c", code, cafile, SERVER]).stdout
    serial, names = json.loads(out)
    return serial, sorted(names)


def curl(lab, host, *args):
    return LabHost(lab.ns(host)).run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"] + list(args),
                                     check=False)


def module(lab, tmp_path, name, args):
    """(status, result) of one og_entry / og_entry_info call made with `ansible` from the client c1."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(lab.dir, "collections"),
               ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               OG_TOKEN=lab.secret("og_server_admin_token"))
    argv = ["ip", "netns", "exec", lab.ns("c1"), os.path.join(BIN, "ansible"), "localhost", "-i", "localhost,",
            "-c", "local", "-m", "outputguard.egress." + name, "-a", json.dumps(args),
            "-e", "ansible_python_interpreter=%s" % sys.executable]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, cwd=TOP, check=False).stdout
    head = out.index("localhost | ")
    return out[head:].split()[2], json.loads(out[out.index("=>", head) + 2:])


def test_gateways_follow_the_server_over_wss_verified_with_the_role_made_ca(deployed):
    lab = deployed[0]
    with open(ca_file(lab), "rb") as fh:
        ca = fh.read()
    for gw in ("gw1", "gw2"):
        etc = os.path.join(lab.dir, "hosts", gw, "etc", "outputguard")
        with open(os.path.join(etc, "agent.yml")) as fh:
            settings = yaml.safe_load(fh)
        assert (settings["servers"], settings["ca_file"]) == ([URL], os.path.join(etc, "ca.crt"))
        assert "allow_insecure_transport" not in settings
        with open(settings["ca_file"], "rb") as fh:
            assert fh.read() == ca
        assert "connected to %s at revision" % URL in agent_log(lab, gw)
    gateways = lab.api("GET", "/api/v1/gateways").json()["items"]
    assert sorted((g["name"], g["connected"]) for g in gateways) == [("gw1", True), ("gw2", True)]
    # On the LAN: HTTPS verified by the role's CA for the server's address; no plain HTTP, no unknown CA.
    assert curl(lab, "c1", "--cacert", ca_file(lab), "https://%s:8080/healthz" % SERVER).stdout == "200"
    assert curl(lab, "c1", "http://%s:8080/healthz" % SERVER).stdout == "000"
    assert curl(lab, "c1", "https://%s:8080/healthz" % SERVER).returncode == 60
    # The lab's UI forwarder on this machine's loopback (README's commands) still answers plain HTTP.
    assert lab.api("GET", "/healthz", token=None).status_code == 200


def test_og_entry_and_og_entry_info_verify_the_server_with_the_role_made_ca(deployed, tmp_path):
    lab = deployed[0]
    server_url = "https://%s:8080" % SERVER
    entry = {"server_url": server_url, "ca_path": ca_file(lab), "target": "203.0.113.99", "comment": "tls e2e"}
    try:
        status, result = module(lab, tmp_path, "og_entry", entry)
        assert (status, result["entry"]["target"]) == ("CHANGED", "203.0.113.99")
        assert module(lab, tmp_path, "og_entry", entry)[0] == "SUCCESS"
        status, result = module(lab, tmp_path, "og_entry_info", {"server_url": server_url, "ca_path": ca_file(lab),
                                                                 "target": "203.0.113.99"})
        assert (status, [e["comment"] for e in result["entries"]]) == ("SUCCESS", ["tls e2e"])
        # Without the CA the system's CAs do not know the lab's: refused, naming the fix.
        status, result = module(lab, tmp_path, "og_entry_info", {"server_url": server_url})
        assert status == "FAILED!"
        assert result["msg"].startswith("cannot verify the TLS certificate of %s/api/v1: " % server_url)
        assert result["msg"].endswith(". Give the CA with ca_path, or set validate_certs=false for a test server")
    finally:
        status = module(lab, tmp_path, "og_entry", dict(entry, state="absent"))[0]
    assert status == "CHANGED"


def test_a_new_certificate_from_a_rerun_is_served_without_restart_and_the_gateways_stay_connected(deployed):
    lab = deployed[0]
    names = ["server", SERVER, "fd77::10"]
    pid = main_pid(lab, "server", "og-server")
    sessions = {gw: agent_log(lab, gw).count("connected to") for gw in ("gw1", "gw2")}
    serial, shown = served(lab, "c1", ca_file(lab))
    assert shown == sorted(["server", SERVER, "FD77:0:0:0:0:0:0:10"])
    try:
        changed = site(lab, "server", og_server_tls_names=names + ["og.lab.test"])
        assert (changed["failed"], changed["changed"] >= 1) == (0, True)
        renewed, shown = served(lab, "c1", ca_file(lab))
        assert (renewed != serial, shown) == (True, sorted(["og.lab.test", "server", SERVER, "FD77:0:0:0:0:0:0:10"]))
        assert main_pid(lab, "server", "og-server") == pid
        assert {gw: agent_log(lab, gw).count("connected to") for gw in sessions} == sessions
        # The sessions that lived through it still carry changes.
        created = lab.api("POST", "/api/v1/entries", json={"target": ALLOWED})
        assert created.status_code == 201, created.text
        entry = created.json()
        wait_until(lambda: probe(lab, "c1", ALLOWED) == "ok", timeout=20, what="allowed address reachable")
        assert lab.api("DELETE", "/api/v1/entries/%d" % entry["id"]).status_code == 204
        wait_until(lambda: probe(lab, "c1", ALLOWED) == "refused", timeout=20, what="deleted address refused")
    finally:
        restored = site(lab, "server")
    assert restored["failed"] == 0
    assert served(lab, "c1", ca_file(lab))[1] == sorted(["server", SERVER, "FD77:0:0:0:0:0:0:10"])
    assert main_pid(lab, "server", "og-server") == pid
    assert {gw: agent_log(lab, gw).count("connected to") for gw in sessions} == sessions
