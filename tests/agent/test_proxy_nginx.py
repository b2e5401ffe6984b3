"""docs/tls.md's nginx example for real: nginx (Debian's) terminates TLS in front of og-server in plain HTTP, og-server
trusts it (trusted_proxies), and a real gateway agent registers over wss:// through it.

The example is read from docs/tls.md and only its host-specific values are replaced (addresses, port, certificate
paths), so the documented file is the one that runs: client -> gw (agent, mgmt0 10.99.0.1) -> srv (10.99.0.2:
nginx on :8443 with TLS, og-server on :8080 in plain HTTP, proxied to over 127.0.0.1, the proxy's address it trusts).
"""

import os
import re
import shutil

import pytest

from tests.agent.conftest import _stack
from tests.support.agentlib import ALLOWED, wait_until
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
              pytest.mark.skipif(shutil.which("nginx") is None,
                                 reason="nginx is not installed (scripts/setup installs it with OG_SETUP_EXTRAS=test)")]

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "tls.md")
SERVER = "10.99.0.2"
PROXY = "https://%s:8443" % SERVER


def documented_example():
    """The nginx block of docs/tls.md's "Behind a TLS-terminating proxy"."""
    with open(DOCS) as fh:
        text = fh.read()
    section = text[text.index("## Behind a TLS-terminating proxy"):]
    return re.search(r"```nginx\n(.*?)```", section, re.S).group(1)


def nginx_conf(folder, cert, key):
    example = documented_example()
    replacements = {"listen 443 ssl;": "listen %s:8443 ssl;" % SERVER,
                    "/etc/nginx/tls/egress.crt": cert, "/etc/nginx/tls/egress.key": key,
                    "proxy_pass http://10.0.0.5:8080;": "proxy_pass http://127.0.0.1:8080;"}
    for old, new in replacements.items():
        assert old in example, "docs/tls.md's nginx example no longer holds %r" % old
        example = example.replace(old, new)
    # What a distribution's nginx.conf around the example provides, with every file in the test's folder.
    return ("user root;\nworker_processes 1;\npid %(f)s/nginx.pid;\nerror_log %(f)s/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n  access_log %(f)s/access.log;\n  client_body_temp_path %(f)s/body;\n"
            "  proxy_temp_path %(f)s/proxy;\n  fastcgi_temp_path %(f)s/fastcgi;\n  uwsgi_temp_path %(f)s/uwsgi;\n"
            "  scgi_temp_path %(f)s/scgi;\n%(example)s}\n" % {"f": folder, "example": example})


@pytest.fixture
def proxy_stack(netns_factory, tmp_path, monkeypatch):
    """The agent tests' stack with og-server trusting 127.0.0.1 as its proxy, and nginx in front of it."""
    for stack in _stack(netns_factory, tmp_path, monkeypatch, {"trusted_proxies": ["127.0.0.1"]}):
        ca = CA(tmp_path / "pki")
        cert, key, _serial = ca.issue(["egress.example.internal", SERVER], "proxy")
        folder = tmp_path / "nginx"
        folder.mkdir()
        conf = folder / "nginx.conf"
        conf.write_text(nginx_conf(str(folder), cert, key))
        checked = stack.topo.srv.run(["nginx", "-t", "-e", str(folder / "startup.log"), "-c", str(conf),
                                      "-p", str(folder)], check=False)
        assert checked.returncode == 0, checked.stderr
        nginx = stack.topo.srv.popen(["nginx", "-e", str(folder / "startup.log"), "-c", str(conf), "-p", str(folder),
                                      "-g", "daemon off;"])
        try:
            wait_until(lambda: curl(stack.topo.gw, ca.path, "/readyz")[0] == "200" or nginx.poll() is not None,
                       timeout=30, interval=0.2, what="og-server's /readyz through nginx")
            assert nginx.poll() is None, (folder / "error.log").read_text()
            stack.ca, stack.nginx_dir = ca, folder
            yield stack
        finally:
            nginx.terminate()
            nginx.wait(timeout=20)


def curl(ns, ca_file, path, *args):
    """(status, headers) of one request through the proxy from ns, verified with ca_file."""
    res = ns.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "-m", "10", "--cacert", ca_file]
                 + list(args) + [PROXY + path], check=False)
    headers, _sep, status = res.stdout.rpartition("\n")
    return status.strip() or res.stderr, headers


def header(headers, name):
    found = re.search(r"^%s: (.*?)\r?$" % name, headers, re.M | re.I)
    return found.group(1) if found else None


def test_the_documented_nginx_proxy_secures_cookies_redirects_to_https_and_carries_the_gateways_wss(proxy_stack):
    stack = proxy_stack
    gw = stack.topo.gw

    # The UI through the proxy: the session cookie is Secure, redirects stay on https:// (X-Forwarded-Proto).
    status, headers = curl(gw, stack.ca.path, "/login")
    assert status == "200", headers
    assert "Secure" in [part.strip() for part in header(headers, "set-cookie").split(";")], headers
    status, headers = curl(gw, stack.ca.path, "/")
    assert status in ("302", "303"), headers
    location = header(headers, "location")
    assert location.startswith("/") or location.startswith(PROXY + "/"), location
    # og-server itself, asked directly in plain HTTP with the same header by someone who is not its proxy: not
    # believed (the cookie is not Secure).
    direct = gw.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "-m", "10", "-H", "X-Forwarded-Proto: https",
                     "http://%s:8080/login" % SERVER]).stdout
    assert "Secure" not in [part.strip() for part in header(direct, "set-cookie").split(";")], direct

    # A real agent registering over wss:// through nginx (og-server has no TLS and no port 8443 of its own).
    stack.server.ws_url = "wss://%s:8443/ws/gateway" % SERVER
    agent = stack.start_agent(extra=["--ca-file", stack.ca.path])
    stack.wait_converged(timeout=60)
    stack.server.add(ALLOWED)
    stack.wait_converged(timeout=60)
    assert agent.alive(), agent.log()
    assert "wss://%s:8443/ws/gateway" % SERVER in agent.log()
    # The session is the agent's TCP connection to nginx's port (nginx logs a WebSocket only when it closes).
    sessions = stack.topo.srv.run(["ss", "-Htn", "state", "established", "( sport = :8443 )"]).stdout
    assert "10.99.0.1:" in sessions, sessions
    # ... and the gateway's traffic rule took effect: the client reaches the entry just added.
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, what="the allowed host through the gateway")
