"""Route planning without a kernel: coverage of the address space, minimality, holes, IPv6, failover and ECMP,
the plan and its diff, management pins, the daemon's gateway choice, and the Kubernetes example's manifests.

Coverage is proved by interval arithmetic over sorted prefixes (each prefix is the integer interval
[first, last]), never by enumerating addresses.
"""

import glob
import ipaddress
import os
import random

import pytest
import yaml

from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, TargetError
from og_kernel.og_routes import (
    BASE_METRIC, ROUTE_PROTO, Path, RouteError, check_gateway_list, desired_routes, host_prefix, management_pins,
    plan, public_prefixes)

# Not tests.support's: tests/unit also runs under ansible-test units, from the tarball, which has no tests/support.
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPACE = {4: 2 ** 32, 6: 2 ** 128}


def interval(net):
    net = ipaddress.ip_network(net, strict=False)
    return int(net.network_address), int(net.broadcast_address)


def merged(intervals):
    """The union of integer intervals, as sorted disjoint intervals."""
    out = []
    for first, last in sorted(intervals):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def intersect(a, b):
    """Intervals where two sorted disjoint interval lists overlap (two pointers)."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        first, last = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if first <= last:
            out.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def coverage_problems(prefixes, internal, exclude=(), version=4):
    """Why `prefixes` fail to cover every address of the family outside internal/exclude exactly once ([] if not)."""
    routed = sorted(interval(p) for p in prefixes)
    problems = []
    for (f1, l1), (f2, l2) in zip(routed, routed[1:]):
        if f2 <= l1:
            problems.append("overlap %s-%s / %s-%s" % (f1, l1, f2, l2))
    kept_out = merged(interval(n) for n in list(internal) + list(exclude)
                      if ipaddress.ip_network(n, strict=False).version == version)
    for first, last in intersect(merged(routed), kept_out):
        problems.append("routes an internal or excluded address: %s-%s" % (first, last))
    union = merged(routed + kept_out)
    if union != [(0, SPACE[version] - 1)]:
        problems.append("gaps: everything covered is %s" % union[:4])
    return problems


def prefixes_of(routes, version=4):
    return sorted(set(ipaddress.ip_network(p) for p, dummy in routes if ipaddress.ip_network(p).version == version))


def internal_of(version):
    return [n for n in DEFAULT_INTERNAL_NETWORKS if ipaddress.ip_network(n).version == version]


# --- coverage, minimality, holes ---------------------------------------------------------------------------------

def test_every_ipv4_address_is_internal_or_routed_by_exactly_one_prefix():
    prefixes = prefixes_of(desired_routes(["10.0.0.1"]))
    assert coverage_problems(prefixes, internal_of(4)) == []
    assert len(prefixes) == 73
    # Each address counted once: the routed addresses plus the internal ones are exactly 2**32.
    routed = sum(p.num_addresses for p in prefixes)
    internal = sum(last - first + 1 for first, last in merged(interval(n) for n in internal_of(4)))
    assert routed + internal == 2 ** 32


def test_the_ranges_outputguards_list_missed_are_routed():
    prefixes = prefixes_of(desired_routes(["10.0.0.1"]))
    for missed in ("172.64.0.0/10", "172.128.0.0/9"):
        assert [str(p) for p in prefixes if p.overlaps(ipaddress.ip_network(missed))] == [missed]
    for public in ("1.1.1.1", "8.8.8.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", "223.255.255.255"):
        assert sum(ipaddress.ip_address(public) in p for p in prefixes) == 1
    for internal in ("10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1", "172.31.255.255",
                     "192.168.1.1", "198.18.0.1", "224.0.0.1", "255.255.255.255", "0.0.0.0"):
        assert sum(ipaddress.ip_address(internal) in p for p in prefixes) == 0


def test_the_coverage_check_catches_gaps_overlaps_and_internal_addresses():
    good = prefixes_of(desired_routes(["10.0.0.1"]))
    internal = internal_of(4)
    gap = [p for p in good if str(p) != "172.64.0.0/10"]
    assert coverage_problems(gap, internal) == ["gaps: everything covered is %s" % [
        (0, interval("172.64.0.0/10")[0] - 1), (interval("172.128.0.0/9")[0], 2 ** 32 - 1)]]
    overlap = good + [ipaddress.ip_network("8.8.8.0/24")]
    assert coverage_problems(overlap, internal)[0].startswith("overlap ")
    leak = good + [ipaddress.ip_network("10.0.0.0/8")]
    assert coverage_problems(leak, internal) == [
        "routes an internal or excluded address: %d-%d" % interval("10.0.0.0/8")]


def test_the_prefix_list_is_minimal():
    for routes in (desired_routes(["10.0.0.1"]),
                   desired_routes(["10.0.0.1", "fd00::1"], ipv6=True, exclude=["203.0.113.50/32", "2001:db8::/48"])):
        for version in (4, 6):
            prefixes = prefixes_of(routes, version)
            assert sorted(ipaddress.collapse_addresses(prefixes)) == prefixes


def test_exclude_carves_holes_and_everything_else_stays_covered():
    exclude = ["203.0.113.128/25", "203.0.113.50/32", "10.20.0.0/16"]
    prefixes = prefixes_of(desired_routes(["10.0.0.1"], exclude=exclude))
    assert coverage_problems(prefixes, internal_of(4), exclude) == []
    assert [str(p) for p in prefixes if p.overlaps(ipaddress.ip_network("203.0.113.0/24"))] == [
        "203.0.113.0/27", "203.0.113.32/28", "203.0.113.48/31", "203.0.113.51/32", "203.0.113.52/30",
        "203.0.113.56/29", "203.0.113.64/26"]
    assert sorted(ipaddress.collapse_addresses(prefixes)) == prefixes
    # Without the holes the list is the plain one: the holes are the only difference.
    assert public_prefixes(exclude=[]) == prefixes_of(desired_routes(["10.0.0.1"]))


def test_random_internal_and_exclude_lists_still_tile_the_space():
    rng = random.Random(20240601)
    for dummy in range(40):
        internal = ["%s/%d" % (ipaddress.ip_address(rng.getrandbits(32)), rng.randint(4, 28))
                    for dummy in range(rng.randint(0, 12))]
        exclude = ["%s/%d" % (ipaddress.ip_address(rng.getrandbits(32)), rng.randint(8, 32))
                   for dummy in range(rng.randint(0, 6))]
        prefixes = prefixes_of(desired_routes(["10.0.0.1"], internal_networks=internal, exclude=exclude))
        assert coverage_problems(prefixes, internal, exclude) == []
        assert sorted(ipaddress.collapse_addresses(prefixes)) == prefixes


def test_bad_networks_are_named():
    with pytest.raises(TargetError) as err:
        desired_routes(["10.0.0.1"], exclude=["203.0.113.0/33"])
    assert str(err.value) == ("exclude network '203.0.113.0/33' is not an IPv4/IPv6 network in CIDR notation "
                              "(e.g. 10.0.0.0/8)")
    with pytest.raises(RouteError) as err:
        desired_routes(["10.0.0.1"], mode="roundrobin")
    assert str(err.value) == "mode 'roundrobin' is not one of failover, ecmp"


# --- IPv6 --------------------------------------------------------------------------------------------------------

def test_ipv6_only_when_asked_and_then_covering_the_ipv6_space():
    assert prefixes_of(desired_routes(["10.0.0.1", "fd00::1"]), 6) == []
    routes = desired_routes(["10.0.0.1", "fd00::1"], ipv6=True)
    v6 = prefixes_of(routes, 6)
    assert coverage_problems(v6, internal_of(6), version=6) == []
    assert ipaddress.ip_network("2000::/3") in v6
    assert {gws for (p, dummy), gws in routes.items() if ":" in p} == {("fd00::1",)}
    assert {gws for (p, dummy), gws in routes.items() if ":" not in p} == {("10.0.0.1",)}
    assert prefixes_of(routes, 4) == prefixes_of(desired_routes(["10.0.0.1"]))


# --- failover and ECMP -------------------------------------------------------------------------------------------

def test_failover_gives_each_gateway_its_own_metric_in_order():
    routes = desired_routes(["10.0.0.3", "10.0.0.1"], mode="failover")
    prefixes = [str(p) for p in public_prefixes()]
    expected = {}
    for prefix in prefixes:
        expected[(prefix, BASE_METRIC)] = ("10.0.0.3",)
        expected[(prefix, BASE_METRIC + 1)] = ("10.0.0.1",)
    assert routes == expected


def test_ecmp_gives_one_multipath_route_per_prefix():
    routes = desired_routes(["10.0.0.3", "10.0.0.1", "fd00::1"], mode="ecmp")
    assert routes == {(str(p), BASE_METRIC): ("10.0.0.1", "10.0.0.3") for p in public_prefixes()}
    assert desired_routes(["10.0.0.3"], mode="ecmp") == desired_routes(["10.0.0.3"], mode="failover")


@pytest.mark.parametrize("gateways, mode, ipv6, message", [
    ([], "failover", False, "no gateway given; name at least one gateway address on this host's LAN"),
    (["gw1.example"], "failover", False, "gateway 'gw1.example' is not an IP address; give the gateway's address "
                                         "on this host's LAN, e.g. 10.77.0.1"),
    (["10.0.0.1", "10.0.0.01"], "failover", False, "gateway '10.0.0.01' is not an IP address; give the gateway's "
                                                   "address on this host's LAN, e.g. 10.77.0.1"),
    (["10.0.0.1", "10.0.0.2", "10.0.0.1"], "ecmp", False,
     "gateway 10.0.0.1 is listed twice; list each gateway once (the first is the primary)"),
    (["10.0.0.1"], "failover", True, "ipv6 is requested but no gateway is an IPv6 address (gateways: 10.0.0.1); "
                                     "add the gateway's IPv6 address or turn ipv6 off"),
    (["fd00::1"], "failover", True, "no gateway is an IPv4 address (gateways: fd00::1); the public IPv4 ranges "
                                    "need one"),
])
def test_gateway_lists_are_checked_before_anything_else(gateways, mode, ipv6, message):
    with pytest.raises(RouteError) as err:
        check_gateway_list(gateways, mode, ipv6)
    assert str(err.value) == message


def test_a_good_gateway_list_passes():
    assert check_gateway_list(["10.0.0.1", "10.0.0.2", "fd00::1"], "ecmp", True) is None


# --- plan and diff -----------------------------------------------------------------------------------------------

def test_plan_adds_changes_removes_and_diffs_sorted_text():
    current = {("8.0.0.0/7", 100): ("10.0.0.1",), ("1.0.0.0/8", 100): ("10.0.0.1",),
               ("4.0.0.0/6", 100): ("10.0.0.1",)}
    desired = {("1.0.0.0/8", 100): ("10.0.0.1",), ("4.0.0.0/6", 100): ("10.0.0.1", "10.0.0.2"),
               ("2.0.0.0/7", 100): ("10.0.0.1",)}
    add, change, remove, diff = plan(current, desired)
    assert (add, change, remove) == ([("2.0.0.0/7", 100)], [("4.0.0.0/6", 100)], [("8.0.0.0/7", 100)])
    assert diff == {
        "before": "1.0.0.0/8 via 10.0.0.1 metric 100\n4.0.0.0/6 via 10.0.0.1 metric 100\n"
                  "8.0.0.0/7 via 10.0.0.1 metric 100\n",
        "after": "1.0.0.0/8 via 10.0.0.1 metric 100\n2.0.0.0/7 via 10.0.0.1 metric 100\n"
                 "4.0.0.0/6 via 10.0.0.1,10.0.0.2 metric 100\n",
    }
    assert plan(desired, desired)[:3] == ([], [], [])


def test_a_failover_switch_is_a_change_of_every_route_and_nothing_else():
    before = desired_routes(["10.0.0.1", "10.0.0.3"])
    after = desired_routes(["10.0.0.3", "10.0.0.1"])
    add, change, remove, dummy = plan(before, after)
    assert (add, remove, len(change)) == ([], [], 2 * 73)


# --- the management path -----------------------------------------------------------------------------------------

def test_management_pins_keep_only_paths_that_are_ours():
    paths = {
        "203.0.113.50": Path(ROUTE_PROTO, "200.0.0.0/5", 100, ("10.0.0.1",)),
        "198.51.100.9": Path(4, "0.0.0.0/0", 0, ("10.0.0.254",)),         # the default route: carve, no pin
        "10.0.0.7": Path(2, "10.0.0.0/24", 0, ()),                        # connected
        "2001:db8::5": Path(ROUTE_PROTO, "2000::/3", 100, ("fd00::1", "fd00::3")),
    }
    assert management_pins(list(paths) + ["192.0.2.200"], paths.get) == {
        ("203.0.113.50/32", BASE_METRIC): ("10.0.0.1",),
        ("2001:db8::5/128", BASE_METRIC): ("fd00::1", "fd00::3"),
    }


def test_host_prefix_reads_ssh_connection_forms():
    assert [host_prefix(a) for a in ("203.0.113.50", "::ffff:203.0.113.50", "fe80::1%eth0", "2001:db8::1")] == [
        "203.0.113.50/32", "203.0.113.50/32", "fe80::1/128", "2001:db8::1/128"]


# --- the daemon's choice of gateway ------------------------------------------------------------------------------

class FakeTable:
    """Stands in for RouteTable: a dict of our routes, as the kernel would hold them."""

    def __init__(self):
        self.routes = {}

    def own_routes(self, ipv6=True):
        return dict(self.routes)

    def apply(self, add, change, remove, desired, current):
        for key in add + change:
            self.routes[key] = desired[key]
        for key in remove:
            del self.routes[key]

    def check_gateways(self, gateways):
        pass

    def close(self):
        pass


@pytest.fixture
def daemon_with():
    from route_agent.daemon import RouteDaemon
    made = []

    def make(health, **kwargs):
        daemon = RouteDaemon(["10.0.0.1", "10.0.0.3"], internal_networks=DEFAULT_INTERNAL_NETWORKS,
                             table=FakeTable(), prober=lambda gw, port, timeout: health[gw], **kwargs)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


def gateway_of(daemon, prefix="1.0.0.0/8"):
    """The gateway the kernel would use: the lowest metric route for the prefix."""
    metric = min(m for p, m in daemon.table.routes if p == prefix)
    return daemon.table.routes[(prefix, metric)]


def step(daemon):
    daemon.probe_all()
    daemon.reconcile()


def test_failover_moves_after_fall_failures_and_back_after_rise_successes(daemon_with):
    health = {"10.0.0.1": True, "10.0.0.3": True}
    daemon = daemon_with(health, fall=2, rise=2)
    step(daemon)
    assert (gateway_of(daemon), daemon.active, daemon.switches) == (("10.0.0.1",), "10.0.0.1", 0)
    health["10.0.0.1"] = False
    step(daemon)   # one lost probe moves nothing
    assert gateway_of(daemon) == ("10.0.0.1",)
    step(daemon)
    assert (gateway_of(daemon), daemon.active, daemon.switches, daemon.repairs) == (
        ("10.0.0.3",), "10.0.0.3", 1, 0)
    assert daemon.table.routes[("1.0.0.0/8", 101)] == ("10.0.0.1",)   # the standby route stays, for fail static
    health["10.0.0.1"] = True
    step(daemon)
    assert gateway_of(daemon) == ("10.0.0.3",)
    step(daemon)
    assert (gateway_of(daemon), daemon.switches) == (("10.0.0.1",), 2)


def test_all_gateways_down_keeps_the_routes_and_ecmp_drops_only_the_dead(daemon_with):
    health = {"10.0.0.1": False, "10.0.0.3": False}
    daemon = daemon_with(health, fall=1, rise=1)
    step(daemon)
    assert gateway_of(daemon) == ("10.0.0.1",) and len(daemon.table.routes) == 2 * 73
    ecmp = daemon_with({"10.0.0.1": True, "10.0.0.3": True}, mode="ecmp", fall=1, rise=1)
    step(ecmp)
    assert gateway_of(ecmp) == ("10.0.0.1", "10.0.0.3")
    ecmp.prober = lambda gw, port, timeout: gw == "10.0.0.3"
    step(ecmp)
    assert (gateway_of(ecmp), len(ecmp.table.routes)) == (("10.0.0.3",), 73)


def test_a_route_deleted_behind_the_daemons_back_is_a_repair(daemon_with):
    daemon = daemon_with({"10.0.0.1": True, "10.0.0.3": True})
    step(daemon)
    del daemon.table.routes[("8.0.0.0/7", 100)]
    assert daemon.reconcile() is True
    assert (daemon.table.routes[("8.0.0.0/7", 100)], daemon.repairs, daemon.switches) == (("10.0.0.1",), 1, 0)
    assert daemon.reconcile() is False


# --- the Kubernetes example --------------------------------------------------------------------------------------

def manifests():
    docs = []
    for path in sorted(glob.glob(os.path.join(TOP, "deploy", "kubernetes", "*.yaml"))):
        with open(path) as fh:
            docs.extend(d for d in yaml.safe_load_all(fh) if d)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_route_daemonset_has_host_network_and_only_net_admin():
    ds = manifests()[("DaemonSet", "og-route")]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] == "outputguard/egress:0.1.0"
    assert container["command"][0] == "og-route"
    assert container["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
    }
    assert "privileged" not in pod.get("securityContext", {})
    from route_agent.cli import parser, validate
    assert validate(parser().parse_args(container["command"][1:] + container.get("args", []))) == []


def test_the_server_deployment_reads_config_from_a_configmap_and_tokens_from_a_secret():
    docs = manifests()
    deployment = docs[("Deployment", "og-server")]
    service = docs[("Service", "og-server")]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    containers = pod["containers"] + pod.get("initContainers", [])
    assert {c["image"] for c in containers} == {"outputguard/egress:0.1.0"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = docs[("ConfigMap", volumes["config"]["configMap"]["name"])]
    config = yaml.safe_load(configmap["data"]["server.yml"])
    from server_app import config as server_config
    secret_env = {"OG_SECRET_KEY": "s" * 32}
    assert server_config.load(overrides=config, environ=secret_env)["listen"] == "0.0.0.0:8080"
    secret_names = {e["valueFrom"]["secretKeyRef"]["name"] for c in containers for e in c.get("env", [])
                    if "valueFrom" in e}
    assert secret_names == {"og-server-secrets"}
    assert ("Secret", "og-server-secrets") in docs
    (server,) = pod["containers"]
    assert server["securityContext"]["privileged"] is False
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert service["spec"]["ports"][0]["targetPort"] == server["ports"][0]["containerPort"] == 8080
