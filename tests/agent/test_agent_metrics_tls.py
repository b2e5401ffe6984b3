"""The agent's metrics endpoint behind a web config (node_exporter's shape; og_kernel.og_webconfig): TLS, client
certificates and basic auth, checked with curl inside the gateway namespace against the real og-gateway-agent.

Certificates are made in each test by tests/support/tlslib.py; the bcrypt hash by the bcrypt package.
"""

import os
import subprocess

import bcrypt
import pytest
import yaml

from tests.support import BIN
from tests.support.agentlib import wait_until
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

URL = "https://127.0.0.1:9900/metrics"  # not /healthz: 503 until the policy is in place
USER, PASSWORD = "prometheus", "s3cret-scrape"


def write_web_config(tmp_path, **config):
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def curl(ns, url, *args):
    """(curl's exit code, the HTTP status) of a GET of url inside ns."""
    res = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"] + list(args) + [url], check=False)
    return res.returncode, res.stdout.strip()


@pytest.fixture
def pki(tmp_path):
    ca = CA(tmp_path / "pki")
    cert, key, _serial = ca.issue(["og-gateway.test", "127.0.0.1"], "metrics")
    return ca, cert, key


def serving(gwns, agent):
    wait_until(lambda: curl(gwns, URL, "-k")[0] == 0 or not agent.alive(), timeout=20, interval=0.1,
               what="the agent's metrics endpoint answering over TLS")
    assert agent.alive(), agent.log()


def test_tls_and_basic_auth_let_the_right_user_in_and_no_one_else(gwns, start_agent, tmp_path, pki):
    ca, cert, key = pki
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = write_web_config(tmp_path, tls_server_config={"cert_file": cert, "key_file": key},
                           basic_auth_users={USER: hashed})
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": web}))
    agent = start_agent(extra=["--config", str(config)])
    serving(gwns, agent)
    right = ["--cacert", ca.path, "-u", "%s:%s" % (USER, PASSWORD)]
    assert curl(gwns, URL, *right) == (0, "200")
    assert curl(gwns, URL, *right) == (0, "200")  # the cached check answers the same
    assert curl(gwns, URL, "--cacert", ca.path) == (0, "401")
    assert curl(gwns, URL, "--cacert", ca.path, "-u", "%s:wrong" % USER) == (0, "401")
    assert curl(gwns, URL, "--cacert", ca.path, "-u", "nobody:%s" % PASSWORD) == (0, "401")
    headers = gwns.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-m", "5", "--cacert", ca.path, URL]).stdout
    assert "www-authenticate: basic realm=" in headers.lower()
    # Plain HTTP to the TLS port gets no HTTP answer; a client not trusting the CA refuses the server.
    assert curl(gwns, "http://127.0.0.1:9900/healthz", "-u", "%s:%s" % (USER, PASSWORD))[1] != "200"
    assert curl(gwns, URL, "-u", "%s:%s" % (USER, PASSWORD))[0] != 0
    # The agent keeps serving after those.
    assert curl(gwns, "https://127.0.0.1:9900/metrics", *right) == (0, "200")


def test_a_required_client_certificate_is_enforced(gwns, start_agent, tmp_path, pki):
    ca, cert, key = pki
    client_ca = CA(tmp_path / "clients", label="clients")
    client_cert, client_key, _serial = client_ca.issue(["prometheus"], "prometheus", client=True)
    web = write_web_config(tmp_path, tls_server_config={
        "cert_file": cert, "key_file": key, "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": client_ca.path})
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": web}))
    agent = start_agent(extra=["--config", str(config)])
    wait_until(lambda: curl(gwns, URL, "--cacert", ca.path, "--cert", client_cert, "--key", client_key)[0] == 0
               or not agent.alive(), timeout=20, interval=0.1, what="the metrics endpoint answering")
    assert agent.alive(), agent.log()
    assert curl(gwns, URL, "--cacert", ca.path, "--cert", client_cert, "--key", client_key) == (0, "200")
    assert curl(gwns, URL, "--cacert", ca.path)[1] != "200"
    # A certificate from another CA is refused too.
    assert curl(gwns, URL, "--cacert", ca.path, "--cert", cert, "--key", key)[1] != "200"


@pytest.mark.parametrize("web, words", [
    ({"tls_server_config": {"cert_file": "/nonexistent.crt", "key_file": "/nonexistent.key"}},
     ["cert_file /nonexistent.crt does not exist"]),
    ({"basic_auth_users": {USER: "plain-password"}}, ["basic_auth_users", USER, "bcrypt hash"]),
    ({"tls_config": {}}, ["unknown key 'tls_config'"]),
    ({"tls_server_config": {"cert_file": "CERT", "key_file": "KEY", "min_version": "TLS10"}},
     ["min_version 'TLS10'", "TLS12 or TLS13"]),
])
def test_a_bad_web_config_is_refused_at_start_with_exit_2_naming_the_file(tmp_path, pki, web, words):
    _ca, cert, key = pki
    tls = web.get("tls_server_config")
    if tls and tls.get("cert_file") == "CERT":
        tls.update(cert_file=cert, key_file=key)
    path = write_web_config(tmp_path, **web)
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": path}))
    res = subprocess.run([os.path.join(BIN, "og-gateway-agent"), "--config", str(config), "--server", "wss://og.test/ws/gateway", "--token", "x",
                          "--name", "gw1", "--client-network", "10.88.0.0/24", "--outside-interface", "og-out"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2, res.stderr
    assert "metrics_web_config_file: %s" % path in res.stderr
    for word in words:
        assert word in res.stderr


def test_healthz_stays_open_and_an_overlong_password_is_a_401_not_a_crash(gwns, start_agent, tmp_path):
    """Basic auth alone: og-route's probe of /healthz (no credentials) still gets its answer; a password longer
    than bcrypt takes (72 bytes) is refused like any wrong one, and the endpoint keeps serving."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = write_web_config(tmp_path, basic_auth_users={USER: hashed})
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": web}))
    agent = start_agent(extra=["--config", str(config)])
    url = "http://127.0.0.1:9900/metrics"
    wait_until(lambda: curl(gwns, url)[1] == "401" or not agent.alive(), timeout=20, interval=0.1,
               what="the agent's metrics endpoint asking for credentials")
    assert agent.alive(), agent.log()
    assert curl(gwns, "http://127.0.0.1:9900/healthz")[1] in ("200", "503")   # an answer, not 401
    assert curl(gwns, url, "-u", "%s:%s" % (USER, "p" * 100)) == (0, "401")
    assert curl(gwns, url, "-u", "%s:%s" % (USER, PASSWORD)) == (0, "200")
