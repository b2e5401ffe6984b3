"""TLS end to end: og-server serving HTTPS and WSS with a real certificate, the agent verifying it, and a proxy.

client (10.88.0.2) -> gw (agent; mgmt0 10.99.0.1) -> inet;  srv (og-server on 10.99.0.2:8443, TLS)
Certificates are made in each test by tests/support/tlslib.py (the cryptography library).
"""

import json
import os
import re
import sys

import pytest
import yaml

from gateway_agent import config as agent_config
from gateway_agent import tls
from server_app import config as server_config
from tests.support.agentlib import ALLOWED, OTHER, ServerProcess, kernel_elements, wait_until
from tests.support.nslib import link, tcp_probe
from tests.support.tlslib import CA, replace

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

SERVER = "10.99.0.2"
PORT = 8443
URL = "wss://%s:%d/ws/gateway" % (SERVER, PORT)


class TLSServer(ServerProcess):
    """og-server serving TLS itself on SERVER:PORT with the given certificate and key."""

    def __init__(self, ns, workdir, cert, key, ca_file, **settings):
        super().__init__(ns, workdir, port=PORT)
        with open(self.config) as fh:
            data = yaml.safe_load(fh)
        data.update(tls_cert_file=cert, tls_key_file=key, **settings)
        with open(self.config, "w") as fh:
            yaml.safe_dump(data, fh)
        self.url, self.ws_url = "https://%s:%d" % (SERVER, PORT), URL
        self.verify = ca_file   # tests serving a bad certificate on purpose set False

    def call(self, method, path, timeout=10, **kw):
        return super().call(method, path, timeout=timeout, verify=self.verify, **kw)

    def log(self):
        with open(self.log_file) as fh:
            return fh.read()


@pytest.fixture
def tls_stack(stack, tmp_path):
    """The agent tests' stack with its server replaced by one serving TLS, certificate by a CA made here."""
    stack.server.stop()
    ca = CA(tmp_path / "pki")
    cert, key, serial = ca.issue(["og-server.test", SERVER], "server")
    stack.server = TLSServer(stack.topo.srv, tmp_path / "tls-server", cert, key, ca.path).start()
    stack.ca, stack.cert, stack.key, stack.serial = ca, cert, key, serial
    return stack


def start_tls_agent(stack):
    return stack.start_agent(extra=["--server", URL, "--ca-file", stack.ca.path])


def served_serial(ns, ca_file):
    """The serial number of the certificate the server presents to a new connection, verified with ca_file."""
    code = ("import socket,ssl,sys\n"
            "c=ssl.create_default_context(cafile=sys.argv[1])\n"
            "s=c.wrap_socket(socket.create_connection((sys.argv[2],int(sys.argv[3])),5),server_hostname=sys.argv[2])\n"
            "print(s.getpeercert()['serialNumber'], s.version())\n")
    out = ns.run([sys.executable, "-c", code, ca_file, SERVER, str(PORT)]).stdout.split()
    return int(out[0], 16), out[1]


def cookie_attributes(headers):
    """The attributes of the session cookie in a response's headers (curl -i), e.g. {'Secure', 'HttpOnly', ...}."""
    line = re.search(r"^set-cookie: session=[^;]*;(.*)$", headers, re.M | re.I).group(1)
    return {part.strip() for part in line.strip().split(";") if part.strip()}


# ---- settings, no network ------------------------------------------------------------------------------------
def agent_args(*servers, extra=()):
    argv = ["--token", "t" * 32, "--client-network", "10.77.0.0/24", "--outside-interface", "out0"]
    for url in servers:
        argv += ["--server", url]
    return argv + list(extra)


def test_agent_refuses_ws_beyond_loopback_unless_allowed_by_name():
    with pytest.raises(agent_config.ConfigError) as info:
        agent_config.load(agent_args("ws://10.0.0.5:8080/ws/gateway", "wss://10.0.0.6/ws/gateway"))
    assert info.value.problems == [
        "server ws://10.0.0.5:8080/ws/gateway is ws:// (clear text: the gateway token and the allowlist would cross "
        "the network unencrypted); use wss:// (with ca_file naming the CA of the server's certificate), or set "
        "allow_insecure_transport: true (--allow-insecure-transport) to allow ws:// to hosts other than loopback"]
    allowed = agent_config.load(agent_args("ws://10.0.0.5:8080/ws/gateway", extra=["--allow-insecure-transport"]))
    assert (allowed["servers"], allowed["allow_insecure_transport"]) == (["ws://10.0.0.5:8080/ws/gateway"], True)
    for url in ("ws://127.0.0.1:8080/ws/gateway", "ws://127.3.4.5/ws/gateway", "ws://[::1]:8080/ws/gateway",
                "ws://localhost:8080/ws/gateway", "wss://og.example.com/ws/gateway"):
        assert agent_config.load(agent_args(url))["servers"] == [url]


def test_agent_setting_in_the_file_must_be_a_boolean(tmp_path):
    path = tmp_path / "agent.yml"
    path.write_text(json.dumps({"servers": ["ws://10.0.0.5/ws/gateway"], "allow_insecure_transport": "yes",
                                "token": "t" * 32, "client_networks": ["10.77.0.0/24"], "outside_interface": "out0"}))
    with pytest.raises(agent_config.ConfigError) as info:
        agent_config.load(["--config", str(path)])
    # Anything but true leaves ws:// refused.
    assert info.value.problems == [
        "allow_insecure_transport must be true or false, not 'yes'",
        "server ws://10.0.0.5/ws/gateway is ws:// (clear text: the gateway token and the allowlist would cross the "
        "network unencrypted); use wss:// (with ca_file naming the CA of the server's certificate), or set "
        "allow_insecure_transport: true (--allow-insecure-transport) to allow ws:// to hosts other than loopback"]


def test_agent_ca_file_must_hold_a_pem_certificate(tmp_path):
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    with pytest.raises(agent_config.ConfigError) as info:
        agent_config.load(agent_args(URL, extra=["--ca-file", str(bad)]))
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("ca_file %s holds no PEM CA certificate (" % bad)
    assert info.value.problems[0].endswith("): give the CA certificate that signed the server's certificate")
    ca = CA(tmp_path / "pki")
    assert agent_config.load(agent_args(URL, extra=["--ca-file", ca.path]))["ca_file"] == ca.path


def test_agent_client_context_verifies_chain_and_name_with_tls_1_2_or_later(tmp_path):
    ca = CA(tmp_path)
    context = tls.client_context(ca.path)
    assert (context.verify_mode, context.check_hostname, context.minimum_version) == (
        tls.ssl.CERT_REQUIRED, True, tls.ssl.TLSVersion.TLSv1_2)


def server_settings(**settings):
    return dict({"secret_key": "s" * 16, "data_dir": "/nonexistent"}, **settings)


def test_server_tls_settings_are_checked_all_at_once(tmp_path):
    ca = CA(tmp_path)
    cert, key, dummy = ca.issue(["og.test"], "a")
    other_cert = ca.issue(["og.test"], "b")[0]
    with pytest.raises(server_config.ConfigError) as info:
        server_config.load(overrides=server_settings(tls_cert_file=cert, tls_min_version="1.1",
                                                     trusted_proxies=["10.0.0.7", "proxy.example"]))
    assert info.value.problems == [
        "tls_min_version '1.1' must be 1.2 or 1.3",
        "tls_cert_file and tls_key_file must be set together (both for HTTPS and WSS, neither for plain HTTP behind "
        "a TLS-terminating proxy); only tls_cert_file is set",
        "trusted_proxies entry 'proxy.example' must be an IP address or network, e.g. 10.0.0.7 or 10.0.0.0/24"]
    with pytest.raises(server_config.ConfigError) as info:
        server_config.load(overrides=server_settings(tls_cert_file=other_cert, tls_key_file=key))
    assert info.value.problems == [
        "tls_cert_file %s and tls_key_file %s are not a PEM certificate and its private key (KEY_VALUES_MISMATCH): "
        "give the server's certificate (its chain after it) and the key it was made for" % (other_cert, key)]
    missing = str(tmp_path / "missing.key")
    with pytest.raises(server_config.ConfigError) as info:
        server_config.load(overrides=server_settings(tls_cert_file=cert, tls_key_file=missing))
    assert info.value.problems == [
        "tls_key_file %s cannot be read: give the path of a PEM file this user may read" % missing]
    cfg = server_config.load(overrides=server_settings(tls_cert_file=cert, tls_key_file=key),
                             environ={"OG_TRUSTED_PROXIES": "[10.0.0.7, 10.1.0.0/16]"})
    assert (cfg["tls_cert_file"], cfg["trusted_proxies"]) == (cert, ["10.0.0.7", "10.1.0.0/16"])
    assert server_config.tls_context(cfg).minimum_version == server_config.ssl.TLSVersion.TLSv1_2
    assert server_config.tls_context(dict(cfg, tls_min_version="1.3")).minimum_version == \
        server_config.ssl.TLSVersion.TLSv1_3


# ---- the real server and agent -------------------------------------------------------------------------------
def test_https_and_wss_carry_the_gateway_the_api_and_a_secure_session_cookie(tls_stack):
    stack = tls_stack
    agent = start_tls_agent(stack)
    agent.wait_log("connected to %s at revision" % URL)
    stack.wait_converged()
    stack.server.add(ALLOWED)
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, interval=0.1, what="%s reachable" % ALLOWED)
    stack.wait_converged()
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32"]
    assert tcp_probe(stack.topo.client, OTHER, 80) == "refused"
    gw = stack.topo.gw
    # From the gateway's namespace, as an operator's browser would: the certificate verified by the CA.
    head = gw.run(["curl", "-sS", "-i", "-m", "5", "--cacert", stack.ca.path,
                   "https://%s:%d/login" % (SERVER, PORT)]).stdout
    assert head.splitlines()[0].strip() == "HTTP/1.1 200 OK"
    assert cookie_attributes(head) == {"Secure", "HttpOnly", "Path=/", "SameSite=Lax"}
    assert served_serial(gw, stack.ca.path) in ((stack.serial, "TLSv1.3"), (stack.serial, "TLSv1.2"))
    # Plain HTTP to the TLS port gets no answer at all, and curl without the CA refuses the server.
    plain = gw.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
                    "http://%s:%d/login" % (SERVER, PORT)], check=False)
    assert plain.stdout == "000"
    untrusted = gw.run(["curl", "-s", "-o", "/dev/null", "-m", "5", "https://%s:%d/login" % (SERVER, PORT)],
                       check=False)
    assert untrusted.returncode == 60   # curl: peer certificate cannot be authenticated with known CA certificates


BAD = {
    "wrong-ca": lambda stack, tmp: CA(tmp / "other", "other").issue(["og-server.test", SERVER], "bad"),
    "wrong-name": lambda stack, tmp: stack.ca.issue(["og-other.test", "10.99.0.3"], "bad"),
    "expired": lambda stack, tmp: stack.ca.issue(["og-server.test", SERVER], "bad", days=(-30, -1)),
}
REASON = {
    "wrong-ca": "the certificate of {url} is not trusted by the CA in ca_file {ca} (unable to get local issuer "
                "certificate): set ca_file to the CA that signed the server's certificate",
    "wrong-name": "the certificate of {url} is not valid for 10.99.0.2 (IP address mismatch, certificate is not "
                  "valid for '10.99.0.2'.): use a URL with a name or address the certificate lists, or give the "
                  "server a certificate for 10.99.0.2",
    "expired": "the certificate of {url} has expired (certificate has expired): renew the server's certificate "
               "(tls_cert_file)",
}


# The test talks to the untrusted server itself without verifying (verify=False), on purpose.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("bad", sorted(BAD))
def test_untrusted_server_certificate_is_refused_by_name_and_the_rules_stay(tls_stack, tmp_path, bad):
    stack = tls_stack
    agent = start_tls_agent(stack)
    stack.wait_converged()
    stack.server.add(ALLOWED)
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, interval=0.1, what="%s reachable" % ALLOWED)
    stack.wait_converged()
    applied = stack.server.gateway()["applied_revision"]

    # The server comes back with a certificate the agent must not trust.
    stack.server.stop()
    cert, key, dummy = BAD[bad](stack, tmp_path)
    replace(cert, stack.cert)
    replace(key, stack.key)
    stack.server.verify = False
    stack.server.start()
    message = "connection to %s refused: %s; rules stay at revision %d" % (
        URL, REASON[bad].format(url=URL, ca=stack.ca.path), applied)
    agent.wait_log(message, timeout=60)
    other = stack.server.add(OTHER)   # not followed while the server is untrusted
    wait_until(lambda: agent.log_since_start().count(message) >= 2, timeout=60, what="a second refusal")
    assert (agent.alive(), stack.server.gateway()["connected"]) == (True, False)
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32"]
    assert stack.topo.reaches(ALLOWED)
    assert tcp_probe(stack.topo.client, OTHER, 80) == "refused"

    # A good certificate again, without restarting anything: the agent's next attempt succeeds and catches up.
    cert, key, dummy = stack.ca.issue(["og-server.test", SERVER], "good-again")
    replace(key, stack.key)
    replace(cert, stack.cert)
    wait_until(lambda: stack.topo.reaches(OTHER), timeout=90, interval=0.2, what="%s reachable" % OTHER)
    stack.wait_converged()
    assert kernel_elements(stack.topo.gw) == sorted([ALLOWED + "/32", OTHER + "/32"])
    stack.server.delete(other["id"])


def test_replaced_certificate_is_served_to_new_connections_and_gateways_stay_connected(tls_stack):
    stack = tls_stack
    agent = start_tls_agent(stack)
    stack.wait_converged()
    assert served_serial(stack.topo.gw, stack.ca.path)[0] == stack.serial
    cert, key, serial = stack.ca.issue(["og-server.test", SERVER], "rotated")
    replace(key, stack.key)
    replace(cert, stack.cert)
    wait_until(lambda: served_serial(stack.topo.gw, stack.ca.path)[0] == serial, timeout=10,
               what="the new certificate served")
    stack.server.add(ALLOWED)
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, interval=0.1, what="%s reachable" % ALLOWED)
    stack.wait_converged()
    # One session throughout: the rotation neither restarted the server nor dropped the gateway.
    assert agent.log_since_start().count("connected to %s" % URL) == 1
    assert stack.server.log().count("TLS certificate loaded from %s" % stack.cert) == 2
    assert stack.server.proc.poll() is None


# ---- behind a TLS-terminating proxy ------------------------------------------------------------------------
def test_forwarded_proto_is_believed_only_from_trusted_proxies(netns_factory, tmp_path, monkeypatch):
    """Plain HTTP behind a proxy: X-Forwarded-Proto https from a trusted proxy makes the session cookie Secure."""
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    tag = "tp%d" % (os.getpid() % 1000)
    srv, proxy = netns_factory(tag + "s"), netns_factory(tag + "p")
    link(proxy, "eth0", "10.98.0.1/24", srv, "eth0", "10.98.0.2/24")
    server = ServerProcess(srv, tmp_path / "server", address="10.98.0.2")
    with open(server.config) as fh:
        data = yaml.safe_load(fh)
    data["trusted_proxies"] = ["10.98.0.1"]
    with open(server.config, "w") as fh:
        yaml.safe_dump(data, fh)
    server.start()
    try:
        def login_cookie(ns, *headers):
            argv = ["curl", "-sS", "-i", "-m", "5"]
            for header in headers:
                argv += ["-H", header]
            return cookie_attributes(ns.run(argv + ["http://10.98.0.2:8080/login"]).stdout)

        plain = {"HttpOnly", "Path=/", "SameSite=Lax"}
        assert login_cookie(proxy, "X-Forwarded-Proto: https") == plain | {"Secure"}
        assert login_cookie(proxy) == plain
        # The same header from anywhere else (here the server's own loopback, which gunicorn trusts by default).
        assert login_cookie(srv, "X-Forwarded-Proto: https") == plain
    finally:
        server.stop()
