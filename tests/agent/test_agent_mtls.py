"""Mutual TLS for gateways (docs/tls.md): og-server with tls_client_ca_file lets a gateway on /ws/gateway only with a
client certificate signed by that CA, in addition to its token; the real agent with client_cert_file and
client_key_file connects, one without a certificate or with one from another CA is refused with a line naming the
fix and keeps its rules; the UI and API ask no certificate of anyone.

client (10.88.0.2) -> gw (agent; mgmt0 10.99.0.1) -> inet;  srv (og-server on 10.99.0.2:8443, TLS)
"""

import os

import pytest

from gateway_agent import config as agent_config
from server_app import config as server_config
from tests.agent.test_agent_tls import PORT, SERVER, URL, TLSServer
from tests.support.agentlib import ALLOWED, OTHER, AgentProcess, kernel_elements, wait_until
from tests.support.nslib import tcp_probe
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]


@pytest.fixture
def mtls_stack(stack, tmp_path):
    """The agent tests' stack, its server serving TLS and requiring gateways' client certificates."""
    stack.server.stop()
    ca = CA(tmp_path / "pki")
    cert, key, _serial = ca.issue(["og-server.test", SERVER], "server")
    gateways = CA(tmp_path / "gateways", label="gateways")
    stack.server = TLSServer(stack.topo.srv, tmp_path / "tls-server", cert, key, ca.path,
                             tls_client_ca_file=gateways.path).start()
    stack.ca, stack.gateways = ca, gateways
    return stack


def agent(stack, tmp_path, *extra):
    """An agent in the gateway namespace with the same state folder each time (its rules survive a restart)."""
    process = AgentProcess(stack.topo.gw, tmp_path / "agent", [URL], stack.server.gateway_token,
                           extra=["--ca-file", stack.ca.path] + list(extra))
    stack.agent = process   # the stack's fixture kills it at the end
    return process.start()


def test_gateways_need_a_client_certificate_from_the_ca_and_keep_their_rules_without_one(mtls_stack, tmp_path):
    stack = mtls_stack
    cert, key, _serial = stack.gateways.issue(["gw1"], "gw1", client=True)
    good = agent(stack, tmp_path, "--client-cert-file", cert, "--client-key-file", key)
    good.wait_log("connected to %s at revision" % URL, timeout=60)
    stack.wait_converged()
    stack.server.add(ALLOWED)
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, interval=0.1, what="%s reachable" % ALLOWED)
    stack.wait_converged()
    applied = stack.server.gateway()["applied_revision"]
    assert good.terminate() == 0

    # No client certificate: the token alone is refused, by name, and the rules stay.
    bare = agent(stack, tmp_path)
    bare.wait_log("connection to %s refused: %s requires a client certificate signed by the CA in its "
                  "tls_client_ca_file: set client_cert_file and client_key_file (mutual TLS); rules stay at "
                  "revision %d" % (URL, URL, applied), timeout=60)
    stack.server.add(OTHER)   # not followed while refused
    assert (bare.alive(), stack.server.gateway()["connected"]) == (True, False)
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32"]
    assert stack.topo.reaches(ALLOWED)
    assert tcp_probe(stack.topo.client, OTHER, 80) == "refused"
    assert "refused: no client certificate (tls_client_ca_file is set)" in stack.server.log()
    assert bare.terminate() == 0

    # A client certificate from another CA: refused in the handshake, by name, and the rules stay.
    stranger = CA(tmp_path / "stranger", label="stranger")
    other_cert, other_key, _serial = stranger.issue(["gw1"], "gw1-stranger", client=True)
    wrong = agent(stack, tmp_path, "--client-cert-file", other_cert, "--client-key-file", other_key)
    wrong.wait_log("connection to %s refused: %s refused the gateway's client certificate" % (URL, URL), timeout=60)
    assert "set client_cert_file and client_key_file to a certificate signed by the CA in the server's " \
           "tls_client_ca_file; rules stay at revision %d" % applied in wrong.log_since_start()
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32"]
    assert stack.server.gateway()["connected"] is False
    assert wrong.terminate() == 0

    # The UI and the API ask no certificate of anyone.
    login = stack.topo.gw.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "--cacert",
                               stack.ca.path, "https://%s:%d/login" % (SERVER, PORT)], check=False)
    assert login.stdout == "200"
    # And the right certificate again: the gateway catches up with what was added meanwhile.
    again = agent(stack, tmp_path, "--client-cert-file", cert, "--client-key-file", key)
    again.wait_log("connected to %s at revision" % URL, timeout=60)
    stack.wait_converged()
    wait_until(lambda: stack.topo.reaches(OTHER), timeout=20, interval=0.1, what="%s reachable" % OTHER)


def test_bad_mutual_tls_settings_are_refused_at_start_naming_the_setting(tmp_path):
    ca = CA(tmp_path / "pki")
    cert, key, _serial = ca.issue(["og-server.test"], "server")
    client_cert, _client_key, _serial = ca.issue(["gw1"], "gw1", client=True)
    settings = {"secret_key": "x" * 32, "data_dir": str(tmp_path / "data")}
    with pytest.raises(server_config.ConfigError) as info:
        server_config.load(overrides=dict(settings, tls_client_ca_file=ca.path))
    assert info.value.problems == [
        "tls_client_ca_file %s needs og-server to serve TLS itself (tls_cert_file and tls_key_file): a client "
        "certificate does not pass a TLS-terminating proxy; set both or drop tls_client_ca_file" % ca.path]
    missing = str(tmp_path / "missing-ca.crt")
    with pytest.raises(server_config.ConfigError) as info:
        server_config.load(overrides=dict(settings, tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=missing))
    assert info.value.problems == [
        "tls_client_ca_file %s is not a readable PEM CA certificate (No such file or directory): give the CA that "
        "signs the gateways' client certificates" % missing]
    cfg = server_config.load(overrides=dict(settings, tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=ca.path))
    assert server_config.tls_context(cfg).verify_mode == server_config.ssl.CERT_OPTIONAL

    base = ["--server", "wss://og.test/ws/gateway", "--token", "x", "--name", "gw1", "--client-network",
            "10.88.0.0/24", "--outside-interface", "og-out"]
    with pytest.raises(agent_config.ConfigError) as info:
        agent_config.load(base + ["--client-cert-file", client_cert])
    assert "client_cert_file and client_key_file must be set together (mutual TLS: the certificate and its key); " \
           "only client_cert_file is set" in info.value.problems
    with pytest.raises(agent_config.ConfigError) as info:
        agent_config.load(base + ["--client-cert-file", client_cert, "--client-key-file", key])
    assert any(p.startswith("client_cert_file %s and client_key_file %s are not a readable PEM certificate and its "
                            "key (" % (client_cert, key)) for p in info.value.problems), info.value.problems
