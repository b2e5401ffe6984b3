"""og-route's health probe against a real og-gateway-agent whose metrics port speaks TLS (a web config with
tls_server_config): with --health-ca-file it probes https://GATEWAY:9900/healthz verified against that CA and the
gateway's address; a wrong CA, or plain HTTP to the TLS port, fails the probe with a log line naming the reason
and the fix; an unusable CA file stops og-route at start (exit 2).

The client namespace has two gateways on its LAN: 10.86.0.9, where nothing answers (always down), and the agent's
10.86.0.1. In failover mode the traffic goes to the agent's address only when its probe succeeds; when both probes
fail the routes stay in the configured order (fail static), the unanswering gateway first. So the route of
8.8.8.8 after `og-route --once` says whether the TLS probe of the agent succeeded.
"""

import ipaddress
import json
import os
import sys

import pytest
import yaml

from tests.support.agentlib import unique_tag, wait_until
from tests.support.nslib import link
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

OG_ROUTE = os.path.join(os.path.dirname(sys.executable), "og-route")
AGENT_GW, DEAD_GW = "10.86.0.1", "10.86.0.9"


def primary(client):
    """The gateway of og-route's metric-100 routes (one once every prefix points the same way)."""
    routes = json.loads(client.ip("-j", "route", "show", "proto", "191").stdout)
    gateways = {r.get("gateway") for r in routes if r["metric"] == 100}
    assert len(gateways) == 1, routes[:5]
    assert any(ipaddress.ip_network(r["dst"]).overlaps(ipaddress.ip_network("8.0.0.0/7")) for r in routes)
    return gateways.pop()


def og_route_once(client, *args):
    return client.run([OG_ROUTE, "--once", "--gateway", DEAD_GW, "--gateway", AGENT_GW] + list(args),
                      check=False, env=dict(os.environ, OG_REFUSE_ROOT_NETNS="1"), timeout=60)


@pytest.fixture
def tls_gateway(gwns, netns_factory, start_agent, tmp_path):
    """The agent in gwns with its metrics on 0.0.0.0:9900 over TLS (a certificate for its LAN address), a client
    namespace on that LAN, the gateway's CA and another CA."""
    ca = CA(tmp_path / "pki")
    other = CA(tmp_path / "other", label="other")
    cert, key, _serial = ca.issue(["og-gateway.test", AGENT_GW, "127.0.0.1"], "metrics")
    web = tmp_path / "web-config.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": cert, "key_file": key}}))
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": str(web)}))
    client = netns_factory(unique_tag() + "rc")
    link(client, "eth0", "10.86.0.2/24", gwns, "lan0", AGENT_GW + "/24")
    agent = start_agent(extra=["--config", str(config)])

    def healthy():
        res = client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "--cacert", ca.path,
                          "https://%s:9900/healthz" % AGENT_GW], check=False)
        return res.stdout.strip() == "200" or not agent.alive()
    wait_until(healthy, timeout=30, interval=0.2, what="the agent's /healthz answering 200 over TLS")
    assert agent.alive(), agent.log()
    return client, ca, other, agent


def test_og_route_probes_a_tls_gateway_with_its_ca_and_names_a_wrong_ca_or_plain_http(tls_gateway, tmp_path):
    client, ca, other, agent = tls_gateway
    url = "https://%s:9900/healthz" % AGENT_GW

    # The right CA: the agent's probe succeeds, the traffic goes to it; nothing is logged about it.
    done = og_route_once(client, "--health-ca-file", ca.path)
    assert done.returncode == 0, done.stderr
    assert primary(client) == AGENT_GW
    assert "health check %s failed" % url not in done.stderr, done.stderr

    # Another CA: the probe fails (both gateways down: fail static, the configured order) and says why.
    done = og_route_once(client, "--health-ca-file", other.path)
    assert done.returncode == 0, done.stderr
    assert primary(client) == DEAD_GW
    assert ("health check %s failed: the gateway's certificate is not trusted by the CA in --health-ca-file %s"
            % (url, other.path)) in done.stderr, done.stderr
    assert "give the CA that signed the gateways' metrics certificates" in done.stderr

    # Plain HTTP to the TLS port (no --health-ca-file): down, and the line says which flag is missing.
    assert primary(client) == DEAD_GW
    done = og_route_once(client)
    assert done.returncode == 0, done.stderr
    assert primary(client) == DEAD_GW
    assert "health check http://%s:9900/healthz failed: no HTTP answer" % AGENT_GW in done.stderr, done.stderr
    assert "give og-route --health-ca-file with their CA" in done.stderr

    # And back: the right CA moves the traffic to the agent again.
    done = og_route_once(client, "--health-ca-file", ca.path)
    assert done.returncode == 0 and primary(client) == AGENT_GW, done.stderr
    assert agent.alive(), agent.log()


def test_a_gateway_certificate_without_the_probed_address_is_named(tls_gateway, start_agent, tmp_path):
    client, ca, _other, agent = tls_gateway
    assert agent.terminate() == 0
    cert, key, _serial = ca.issue(["og-gateway.test"], "metrics-name-only")
    web = tmp_path / "web-name-only.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": cert, "key_file": key}}))
    config = tmp_path / "agent-name-only.yml"
    config.write_text(yaml.safe_dump({"metrics_web_config_file": str(web)}))
    again = start_agent(extra=["--config", str(config)])
    wait_until(lambda: client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "-k",
                                   "https://%s:9900/healthz" % AGENT_GW], check=False).stdout == "200"
               or not again.alive(), timeout=30, interval=0.2, what="the agent's /healthz with the new certificate")
    assert again.alive(), again.log()
    done = og_route_once(client, "--health-ca-file", ca.path)
    assert done.returncode == 0, done.stderr
    assert primary(client) == DEAD_GW
    assert ("health check https://%s:9900/healthz failed: the gateway's certificate is not valid for %s (" %
            (AGENT_GW, AGENT_GW)) in done.stderr, done.stderr
    assert "give its metrics a certificate that lists the address og-route probes (--gateway %s)" % AGENT_GW \
        in done.stderr


def test_https_probe_of_a_plain_http_gateway_and_an_unusable_ca_file_are_named(gwns, netns_factory, start_agent,
                                                                               tmp_path):
    ca = CA(tmp_path / "pki")
    client = netns_factory(unique_tag() + "rc")
    link(client, "eth0", "10.86.0.2/24", gwns, "lan0", AGENT_GW + "/24")
    agent = start_agent()   # metrics in plain HTTP
    wait_until(lambda: client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
                                   "http://%s:9900/healthz" % AGENT_GW], check=False).stdout == "200"
               or not agent.alive(), timeout=30, interval=0.2, what="the agent's /healthz answering 200")
    assert agent.alive(), agent.log()
    done = og_route_once(client)
    assert done.returncode == 0 and primary(client) == AGENT_GW, done.stderr

    done = og_route_once(client, "--health-ca-file", ca.path)
    assert done.returncode == 0, done.stderr
    assert primary(client) == DEAD_GW
    assert ("health check https://%s:9900/healthz failed: no TLS answer" % AGENT_GW) in done.stderr, done.stderr
    assert "drop --health-ca-file" in done.stderr

    garbage = tmp_path / "not-a-ca.pem"
    garbage.write_text("not a certificate\n")
    for path in (str(garbage), str(tmp_path / "missing.pem")):
        done = og_route_once(client, "--health-ca-file", path)
        assert done.returncode == 2, done.stderr
        assert "og-route: --health-ca-file %s: cannot load it as a CA" % path in done.stderr, done.stderr
    assert primary(client) == DEAD_GW   # nothing changed by the refused runs
    done = og_route_once(client, "--health-ca-file", ca.path, "--health-port", "0")
    assert done.returncode == 2 and "--health-ca-file needs health checks" in done.stderr, done.stderr
