"""A changed setting reaches the running daemon in the lab: one setting of each role changed, site.yml rerun, its
effect seen; a rerun with nothing changed restarts nothing; stopping a daemon ends all of its processes.

Each test puts the lab's settings back before it ends (the other e2e tests share the lab).
"""

import json
import os
import signal

import pytest

from tests.support import TOP
from tests.support.lablib import LabHost, gateway_elements, recap
from tests.support.nslib import sh, wait_until

EXCLUDED = "198.51.100.0/24"
LAB_SERVICE = os.path.join(TOP, "roles", "service", "files", "lab-service")
# Each test reruns site.yml on a lab host two or three times (about a minute each on a busy machine), and the
# first one also waits for the lab to be built and deployed.
pytestmark = pytest.mark.timeout(1200)


def site(lab, host, **extra_vars):
    """site.yml on one lab host with extra vars: that host's recap."""
    args = ["site", "--limit", host] + (["-e", json.dumps(extra_vars)] if extra_vars else [])
    return recap(lab.lab(*args).stdout)[host]


def pidfile(lab, host, name):
    return os.path.join(lab.dir, "hosts", host, "run", name + ".pid")


def main_pid(lab, host, name):
    with open(pidfile(lab, host, name)) as fh:
        return int(fh.read())


def daemon_processes(lab, ns, name):
    """{pid: parent pid} of every process in a lab namespace that runs the program `name`."""
    found = {}
    for pid in map(int, sh(["ip", "netns", "pids", lab.ns(ns)]).stdout.split()):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                argv = fh.read().split(b"\0")
            with open("/proc/%d/stat" % pid) as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except FileNotFoundError:
            continue
        if any(arg.endswith(b"/bin/" + name.encode()) for arg in argv[:2]):
            found[pid] = ppid
    return found


def route(lab, host, address):
    """How a client's kernel routes an address: 'via <gateway>' or 'unreachable'."""
    proc = LabHost(lab.ns(host)).run(["ip", "route", "get", address], check=False)
    if proc.returncode != 0:
        return "unreachable" if "unreachable" in proc.stderr else proc.stderr.strip()
    words = proc.stdout.split()
    return "via " + words[words.index("via") + 1] if "via" in words else proc.stdout.strip()


def http_status(lab, ns, url):
    """The HTTP status of a GET from inside a lab namespace; '000' when nothing answers."""
    return LabHost(lab.ns(ns)).run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url],
                                   check=False).stdout


def wait_fleet_in_step(lab):
    wait_until(lambda: all(gw["connected"] and gw["lag"] == 0 and gw["digest_match"]
                           for gw in lab.api("GET", "/api/v1/gateways").json()["items"]),
               timeout=60, interval=0.5, what="every gateway connected and in step")


def test_a_network_added_to_og_route_exclude_restarts_og_route_which_keeps_it_out(deployed):
    lab = deployed[0]
    before = main_pid(lab, "client1", "og-route")
    assert route(lab, "c1", "198.51.100.10") == "via 10.77.0.1"
    try:
        changed = site(lab, "client1", og_route_exclude=[EXCLUDED])
        restarted = main_pid(lab, "client1", "og-route")
        # The routes, the stop, the start and the record of what og-route was started with.
        assert (changed["changed"], changed["failed"]) == (4, 0)
        assert restarted != before
        assert daemon_processes(lab, "c1", "og-route") == {restarted: 1}
        assert route(lab, "c1", "198.51.100.10") == "unreachable"
        # A route deleted by hand is put back by og-route: it has re-asserted its routes since it started,
        # and with the new flags it left the excluded network out.
        LabHost(lab.ns("c1")).run(["ip", "route", "del", "200.0.0.0/5", "via", "10.77.0.1"])
        wait_until(lambda: route(lab, "c1", "203.0.113.10") == "via 10.77.0.1", timeout=15,
                   what="og-route put back the route deleted by hand")
        assert route(lab, "c1", "198.51.100.10") == "unreachable"

        again = site(lab, "client1", og_route_exclude=[EXCLUDED])
        assert (again["changed"], again["failed"]) == (0, 0)
        assert main_pid(lab, "client1", "og-route") == restarted
    finally:
        restored = site(lab, "client1")
    assert restored["failed"] == 0
    assert main_pid(lab, "client1", "og-route") != restarted
    assert route(lab, "c1", "198.51.100.10") == "via 10.77.0.1"


def test_a_changed_metrics_port_restarts_the_gateway_agent_on_it(deployed):
    lab = deployed[0]
    before = main_pid(lab, "gw2", "og-gateway-agent")
    assert http_status(lab, "gw2", "http://127.0.0.1:9900/metrics") == "200"
    try:
        changed = site(lab, "gw2", og_gateway_metrics_listen="0.0.0.0:9911")
        restarted = main_pid(lab, "gw2", "og-gateway-agent")
        # The configuration file, the stop, the start and the record.
        assert (changed["changed"], changed["failed"]) == (4, 0)
        assert restarted != before
        assert daemon_processes(lab, "gw2", "og-gateway-agent") == {restarted: 1}
        assert http_status(lab, "gw2", "http://127.0.0.1:9911/metrics") == "200"
        assert http_status(lab, "gw2", "http://127.0.0.1:9900/metrics") == "000"
    finally:
        restored = site(lab, "gw2")
    assert restored["failed"] == 0
    assert http_status(lab, "gw2", "http://127.0.0.1:9900/metrics") == "200"
    assert http_status(lab, "gw2", "http://127.0.0.1:9911/metrics") == "000"
    wait_fleet_in_step(lab)


def test_a_changed_min_prefix_restarts_the_server_which_then_refuses_shorter_prefixes(deployed):
    lab = deployed[0]
    before = main_pid(lab, "server", "og-server")
    try:
        changed = site(lab, "server", og_server_min_prefix_v4=25)
        assert changed["failed"] == 0
        assert main_pid(lab, "server", "og-server") != before
        refused = lab.api("POST", "/api/v1/entries", json={"target": EXCLUDED})
        assert (refused.status_code, refused.json()) == (400, {"error": {
            "code": "invalid_target",
            "message": "198.51.100.0/24 is too broad: prefixes shorter than /25 are refused for IPv4; "
                       "add narrower networks instead"}})
    finally:
        restored = site(lab, "server")
    assert restored["failed"] == 0
    accepted = lab.api("POST", "/api/v1/entries", json={"target": EXCLUDED})
    assert accepted.status_code == 201
    lab.api("DELETE", "/api/v1/entries/%d" % accepted.json()["id"])
    wait_fleet_in_step(lab)


def test_kill_9_of_the_server_master_leaves_no_worker_once_the_service_manager_takes_over(deployed):
    lab = deployed[0]
    master = main_pid(lab, "server", "og-server")
    workers = {pid for pid, ppid in daemon_processes(lab, "server", "og-server").items() if ppid == master}
    assert len(workers) == 1
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: master not in daemon_processes(lab, "server", "og-server"), timeout=10,
               what="the master gone")
    # The worker outlives its master on its own: this is what the service manager has to clean up.
    assert set(daemon_processes(lab, "server", "og-server")) == workers

    restarted = site(lab, "server")
    assert restarted["failed"] == 0
    new_master = main_pid(lab, "server", "og-server")
    processes = daemon_processes(lab, "server", "og-server")
    new_workers = {pid for pid, ppid in processes.items() if ppid == new_master}
    # Exactly one master and its one worker; none of the old processes.
    assert (len(new_workers), set(processes)) == (1, {new_master} | new_workers)
    assert not (set(processes) & (workers | {master}))
    wait_fleet_in_step(lab)
    entry = lab.api("POST", "/api/v1/entries", json={"target": "198.51.100.20"}).json()
    try:
        wait_until(lambda: "198.51.100.20" in gateway_elements(lab), timeout=15,
                   what="a change reaching gw1 through the new server process")
    finally:
        lab.api("DELETE", "/api/v1/entries/%d" % entry["id"])

    # Stopping it, with the master alive, leaves no process of og-server at all.
    stopped = LabHost(lab.ns("server")).run([LAB_SERVICE, "stop", pidfile(lab, "server", "og-server")])
    assert stopped.stdout == "stopped\n"
    assert daemon_processes(lab, "server", "og-server") == {}
    assert not os.path.exists(pidfile(lab, "server", "og-server"))
    started = site(lab, "server")
    assert started["failed"] == 0
    assert len(daemon_processes(lab, "server", "og-server")) == 2
    wait_fleet_in_step(lab)
