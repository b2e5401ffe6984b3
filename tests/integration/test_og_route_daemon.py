"""og-route for real: the daemon runs in a client namespace next to two gateway namespaces on a LAN, each with a
/healthz HTTP server on port 9900; it fails over when the primary's endpoint stops, comes back, repairs a route
deleted by hand, keeps its routes when every gateway is down and when it is stopped (fail static)."""

import ipaddress
import json
import os
import signal
import subprocess
import sys

import bcrypt
import pytest
import yaml

from tests.support.nslib import link, wait_until
from tests.support.tlslib import CA

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

OG_ROUTE = os.path.join(os.path.dirname(sys.executable), "og-route")
GW_A, GW_B = "10.89.0.1", "10.89.0.3"
METRICS = "127.0.0.1:9911"
PREFIXES = 73   # public IPv4 prefixes of the built-in internal list (proved in tests/unit/test_routes_plan.py)


class Lan:
    """client (10.89.0.2 on br0) -- gateway A (10.89.0.1), gateway B (10.89.0.3); default route via 10.89.0.254."""

    def __init__(self, make, tag, health_dir):
        self.client = make(tag + "c")
        self.gw = {GW_A: make(tag + "a"), GW_B: make(tag + "b")}
        self.health_dir = str(health_dir)
        self.health = {}
        self.client.ip("link", "add", "br0", "type", "bridge")
        self.client.ip("addr", "add", "10.89.0.2/24", "dev", "br0")
        self.client.ip("link", "set", "br0", "up")
        for i, address in enumerate((GW_A, GW_B)):
            link(self.client, "port%d" % i, None, self.gw[address], "lan0", address + "/24")
            self.client.ip("link", "set", "port%d" % i, "master", "br0")
        self.client.ip("route", "add", "default", "via", "10.89.0.254")
        with open(os.path.join(self.health_dir, "healthz"), "w") as fh:
            fh.write("ok\n")

    def start_health(self, gw):
        """python's http.server in the gateway namespace, answering /healthz on port 9900."""
        self.health[gw] = self.gw[gw].popen([sys.executable, "-m", "http.server", "9900", "--bind", gw,
                                             "--directory", self.health_dir])
        wait_until(lambda: self.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                                            "http://%s:9900/healthz" % gw], check=False).stdout == "200",
                   timeout=15, what="the health endpoint of %s" % gw)

    def stop_health(self, gw):
        proc = self.health.pop(gw)
        proc.kill()
        proc.wait(timeout=10)

    def ours(self):
        """{(prefix, metric): gateway} of the client's routes with protocol 191."""
        routes = json.loads(self.client.ip("-j", "route", "show", "proto", "191").stdout)
        return {(str(ipaddress.ip_network(r["dst"])), r["metric"]): r.get("gateway") for r in routes}

    def primaries(self):
        """The set of gateways of our metric-100 routes: one element once every prefix has moved."""
        return set(gw for (prefix, metric), gw in self.ours().items() if metric == 100)

    def via(self, address="8.8.8.8"):
        (route,) = json.loads(self.client.ip("-j", "route", "get", address).stdout)
        return route.get("gateway")

    def http(self, path):
        proc = self.client.run(["curl", "-s", "-m", "2", "-w", "\n%{http_code}", "http://%s%s" % (METRICS, path)],
                               check=False)
        body, dummy, code = proc.stdout.rpartition("\n")
        return code, body

    def metrics(self):
        """{'name{labels}': value} from og-route's /metrics."""
        code, body = self.http("/metrics")
        assert code == "200"
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in body.splitlines() if line and not line.startswith("#")}


@pytest.fixture
def lan(netns_factory, tmp_path):
    lan = Lan(netns_factory, "rd", tmp_path)
    lan.start_health(GW_A)
    lan.start_health(GW_B)
    return lan


def run_og_route(lan, *args):
    env = dict(os.environ, OG_REFUSE_ROOT_NETNS="1")
    return lan.client.run([OG_ROUTE] + list(args), check=False, env=env, timeout=60)


def test_failover_failback_repair_fail_static_and_sigterm(lan, tmp_path):
    log_path = tmp_path / "og-route.log"
    with open(log_path, "w") as log:
        daemon = lan.client.popen([OG_ROUTE, "--gateway", GW_A, "--gateway", GW_B, "--interval", "0.3",
                                   "--metrics-listen", METRICS],
                                  stderr=log, env=dict(os.environ, OG_REFUSE_ROOT_NETNS="1"))

    wait_until(lambda: len(lan.ours()) == 2 * PREFIXES, timeout=30, what="og-route's routes")
    ours = installed = lan.ours()
    assert set(v for (p, m), v in ours.items() if m == 100) == {GW_A}
    assert set(v for (p, m), v in ours.items() if m == 101) == {GW_B}
    assert lan.via() == GW_A
    assert lan.via("10.1.2.3") == "10.89.0.254"   # internal addresses keep the default route
    wait_until(lambda: lan.http("/healthz") == ("200", "ok: traffic goes to gateway %s\n" % GW_A), timeout=15,
               what="og-route's /healthz")

    lan.stop_health(GW_A)
    wait_until(lambda: lan.primaries() == {GW_B}, timeout=30, what="traffic to move to the standby")
    assert (len(lan.ours()), lan.via()) == (2 * PREFIXES, GW_B)
    wait_until(lambda: lan.metrics()["og_route_switches_total"] == 1.0, timeout=10, what="the switch to be counted")
    metrics = lan.metrics()
    assert {k: metrics[k] for k in ('og_route_gateway_up{gateway="10.89.0.1"}',
                                    'og_route_gateway_active{gateway="10.89.0.3"}', "og_route_switches_total",
                                    "og_route_repairs_total", "og_route_routes")} == {
        'og_route_gateway_up{gateway="10.89.0.1"}': 0.0, 'og_route_gateway_active{gateway="10.89.0.3"}': 1.0,
        "og_route_switches_total": 1.0, "og_route_repairs_total": 0.0, "og_route_routes": 2.0 * PREFIXES}

    lan.start_health(GW_A)
    wait_until(lambda: lan.primaries() == {GW_A}, timeout=30, what="traffic to come back to the primary")
    wait_until(lambda: lan.metrics()["og_route_switches_total"] == 2.0, timeout=10, what="the switch to be counted")

    lan.client.ip("route", "del", "8.0.0.0/7", "metric", "100")
    wait_until(lambda: lan.via() == GW_A, timeout=30, what="the deleted route to be re-added")
    assert lan.ours()[("8.0.0.0/7", 100)] == GW_A
    wait_until(lambda: lan.metrics()["og_route_repairs_total"] == 1.0, timeout=10, what="the repair to be counted")

    lan.stop_health(GW_A)
    lan.stop_health(GW_B)
    wait_until(lambda: lan.metrics()['og_route_gateway_up{gateway="10.89.0.3"}'] == 0.0, timeout=30,
               what="both gateways to be seen down")
    # Nothing answers: the routes stay, in the configured order (fail static).
    wait_until(lambda: lan.ours() == installed, timeout=30, what="the routes in the configured order")

    before = lan.ours()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert lan.ours() == before
    text = log_path.read_text()
    for line in ("gateway 10.89.0.1 is down", "traffic moved from gateway 10.89.0.1 to 10.89.0.3",
                 "gateway 10.89.0.1 is up", "traffic moved from gateway 10.89.0.3 to 10.89.0.1",
                 "routes changed outside og-route were put right: added 1, changed 0, removed 0",
                 "no gateway answers its health check; the routes stay as they are (fail static)",
                 "stopping; the routes stay as they are (fail static)"):
        assert line in text
    assert "Traceback" not in text


def test_netlink_events_repair_routes_long_before_the_timer(lan, tmp_path):
    """With a 120 s timer, only netlink events can explain repairs within the wait: a link restart (the kernel
    drops every route through the link) and a route deleted by hand. SIGTERM is answered at once as well."""
    log_path = tmp_path / "og-route.log"
    with open(log_path, "w") as log:
        daemon = lan.client.popen([OG_ROUTE, "--gateway", GW_A, "--gateway", GW_B, "--interval", "120",
                                   "--health-port", "0"],
                                  stderr=log, env=dict(os.environ, OG_REFUSE_ROOT_NETNS="1"))
    wait_until(lambda: len(lan.ours()) == 2 * PREFIXES, timeout=30, what="og-route's routes")
    installed = lan.ours()

    lan.client.ip("link", "set", "br0", "down")
    assert lan.ours() == {}   # the kernel removed them with the link
    lan.client.ip("link", "set", "br0", "up")
    wait_until(lambda: lan.ours() == installed, timeout=20, what="the routes to come back after the link restart")

    lan.client.ip("route", "del", "172.64.0.0/10", "metric", "100")
    lan.client.ip("route", "del", "172.64.0.0/10", "metric", "101")
    wait_until(lambda: lan.ours() == installed, timeout=20, what="the deleted routes to be re-added")

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    assert lan.ours() == installed
    assert "Traceback" not in log_path.read_text()


def test_once_installs_and_exits_and_bad_input_exits_with_the_reason(lan):
    done = run_og_route(lan, "--gateway", GW_B, "--gateway", GW_A, "--once")
    assert (done.returncode, len(lan.ours()), lan.via()) == (0, 2 * PREFIXES, GW_B)

    before = lan.ours()
    for args, rc, message in [
        (["--gateway", GW_A, "--interval", "0"], 2, "og-route: --interval 0.0 must be positive\n"),
        (["--gateway", "gw-a"], 2, "og-route: --gateway 'gw-a' is not an IP address; give the gateway's address, "
                                   "e.g. 10.77.0.1\n"),
        (["--gateway", GW_A, "--gateway", GW_A], 2, "og-route: --gateway 10.89.0.1 is given twice; give each "
                                                    "gateway once (the first is the primary)\n"),
        (["--gateway", GW_A, "--metrics-listen", "9911"], 2, "og-route: --metrics-listen '9911' must be HOST:PORT, "
                                                             "e.g. 127.0.0.1:9901 or [::1]:9901\n"),
        (["--gateway", GW_A, "--gateway", "10.77.0.1", "--once"], 1,
         "og-route: gateway 10.77.0.1 is not on a directly connected network of this host (connected: "
         "10.89.0.0/24, 127.0.0.0/8, fe80::/64); give the address of a gateway on the same LAN\n"),
    ]:
        done = run_og_route(lan, *args)
        assert (done.returncode, done.stderr) == (rc, message)
        assert lan.ours() == before
    done = run_og_route(lan, "--gateway", GW_A, "--no-such-flag")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-flag" in done.stderr
    assert subprocess.run([OG_ROUTE, "--help"], capture_output=True, text=True, check=False).returncode == 0


def test_metrics_behind_a_web_config_need_tls_and_the_right_user_and_a_bad_one_exits_2(lan, tmp_path):
    ca = CA(tmp_path / "pki")
    cert, key, _serial = ca.issue(["og-route.test", "127.0.0.1"], "metrics")
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": cert, "key_file": key},
                                   "basic_auth_users": {"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}}))
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"basic_auth_users": {"prom": "pw"}}))
    done = run_og_route(lan, "--gateway", GW_A, "--metrics-listen", METRICS, "--metrics-web-config-file", str(bad))
    assert done.returncode == 2 and "og-route: --metrics-web-config-file: %s: basic_auth_users: prom" % bad \
        in done.stderr, done.stderr
    with open(tmp_path / "og-route.log", "w") as log:
        daemon = lan.client.popen([OG_ROUTE, "--gateway", GW_A, "--metrics-listen", METRICS,
                                   "--metrics-web-config-file", str(web)],
                                  stderr=log, env=dict(os.environ, OG_REFUSE_ROOT_NETNS="1"))
    url = "https://%s/metrics" % METRICS

    def status(*args):
        res = lan.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"] + list(args) + [url],
                             check=False)
        return res.returncode, res.stdout.strip()

    try:
        wait_until(lambda: status("-k")[0] == 0 or daemon.poll() is not None, timeout=30, what="og-route's metrics")
        assert daemon.poll() is None
        assert status("--cacert", ca.path, "-u", "prom:pw") == (0, "200")
        assert status("--cacert", ca.path) == (0, "401")
        assert status("--cacert", ca.path, "-u", "prom:wrong") == (0, "401")
        assert status("-u", "prom:pw")[0] != 0   # the CA not trusted
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
