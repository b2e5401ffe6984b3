"""The real og-server and og-gateway-agent with real traffic: client -> gateway -> internet, server beside.

client (10.88.0.2) -> gw (agent; og-out 203.0.113.2; mgmt0 10.99.0.1) -> inet (198.51.100.10/.20 on :80)
                                                                     srv (og-server 10.99.0.2:8080)
"""

import os
import re
import time

import pytest

from tests.support.agentlib import (ALLOWED, OTHER, TRAFFIC, UPLOAD, Background, http_status, kernel_elements,
                                    sample, scrape, wait_until)
from tests.support.nslib import tcp_probe

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]


def promtool_problems(text):
    """promtool check metrics' complaints, except the one about outputGuard's series names.

    iptables_bytes_count and iptables_packets_count keep outputGuard's names (its Grafana queries use them);
    promtool dislikes the _count suffix on a gauge. Every other complaint fails the test."""
    import shutil
    import subprocess
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; scripts/setup installs it for tests")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("iptables_bytes_count", "iptables_packets_count"))]


def refused(stack, host):
    return tcp_probe(stack.topo.client, host, 80, timeout=2) == "refused"


def open_entry(stack, target):
    """POST an entry and wait until the client reaches it through the gateway."""
    entry = stack.server.add(target)
    wait_until(lambda: stack.topo.reaches(target), timeout=20, interval=0.1, what="%s reachable" % target)
    stack.wait_converged()
    return entry


@pytest.mark.parametrize("cut", [True, False], ids=["default-cuts", "no-cut-on-remove"])
def test_posted_entry_opens_and_its_deletion_cuts_established_flows(stack, tmp_path, cut):
    stack.start_agent(extra=[] if cut else ["--no-cut-on-remove"])
    stack.wait_converged()
    assert refused(stack, ALLOWED)

    entry = open_entry(stack, ALLOWED)
    assert refused(stack, OTHER)
    upload = Background(stack.topo.client, UPLOAD, lambda b: [ALLOWED, b.progress_file, 60], tmp_path, "upload")
    wait_until(lambda: upload.progress().get("sent", 0) > 100000, timeout=20, what="upload flowing")

    stack.server.delete(entry["id"])
    stack.wait_converged()
    wait_until(lambda: refused(stack, ALLOWED), timeout=10, what="new connections refused")
    if cut:
        # The established flow ends at once, with a reset from the gateway rather than a time-out.
        wait_until(lambda: upload.progress().get("done"), timeout=15, what="upload cut")
        assert upload.progress()["error"] in ("ConnectionResetError", "BrokenPipeError")
        assert re.search(r"cut [1-9]\d* connection\(s\) to 1 removed element\(s\)", stack.agent.log_since_start())
    else:
        # Without cutting, the established flow carries on after the deletion was applied.
        sent = upload.progress()["sent"]
        wait_until(lambda: upload.progress().get("sent", 0) > sent + 200000, timeout=20, what="upload goes on")
        assert upload.progress()["error"] is None
        upload.proc.kill()


def test_kill_9_during_transfers_loses_nothing_and_the_restarted_agent_converges(stack, tmp_path):
    agent = stack.start_agent()
    open_entry(stack, ALLOWED)
    saved = stack.server.gateway()["applied_revision"]
    load = Background(stack.topo.client, TRAFFIC, lambda b: [ALLOWED, b.progress_file, b.stop_file], tmp_path, "load")
    wait_until(lambda: load.progress().get("requests_ok", 0) >= 3, timeout=20, what="load running")

    agent.kill9()
    # No agent at all: the kernel keeps forwarding, new connections included.
    ok = load.progress()["requests_ok"]
    wait_until(lambda: load.progress()["requests_ok"] >= ok + 5, timeout=20, what="requests without an agent")
    stack.server.add(OTHER)  # a change the dead agent cannot see
    assert refused(stack, OTHER)

    agent.start()
    wait_until(lambda: stack.topo.reaches(OTHER), timeout=20, interval=0.1, what="the change after restart")
    stack.wait_converged()
    ok, streamed = load.progress()["requests_ok"], load.progress()["stream_bytes"]
    wait_until(lambda: load.progress()["requests_ok"] >= ok + 5 and load.progress()["stream_bytes"] > streamed,
               timeout=20, what="traffic after the restart")

    result = load.stop()
    # One download from start to end, and no request failed.
    assert (result["streams"], result["stream_errors"], result["request_errors"], result["errors"]) == (1, 0, 0, [])
    assert result["requests_ok"] >= 15
    assert "restored saved state revision=%d elements=1" % saved in agent.log_since_start()
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32", OTHER + "/32"]


def test_server_down_and_gateway_rebuilt_restore_the_last_state_from_disk(stack):
    agent = stack.start_agent()
    open_entry(stack, ALLOWED)
    revision = stack.server.gateway()["applied_revision"]

    stack.server.stop()
    wait_until(lambda: sample(scrape(stack.topo.gw), "og_gateway_connected") == 0, timeout=20,
               what="agent noticing the server is gone")
    assert stack.topo.reaches(ALLOWED)  # fail-static
    assert refused(stack, OTHER)

    # SIGTERM: exit 0, rules left in place.
    assert agent.terminate() == 0
    assert stack.topo.reaches(ALLOWED)
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32"]

    # "Reboot": the gateway namespace with all its kernel state is destroyed and built again.
    stack.topo.rebuild_gateway()
    assert not stack.topo.reaches(ALLOWED)
    assert kernel_elements(stack.topo.gw) == []

    # The server is still down: the agent puts back what it saved.
    agent = stack.start_agent()
    wait_until(lambda: stack.topo.reaches(ALLOWED), timeout=20, interval=0.1, what="restored from disk")
    assert refused(stack, OTHER)
    assert "restored saved state revision=%d elements=1" % revision in agent.log_since_start()
    assert http_status(stack.topo.gw, "http://127.0.0.1:9900/healthz") == "200"

    stack.server.start()
    stack.wait_converged(timeout=60)  # backoff grew while the server was down
    assert stack.topo.reaches(ALLOWED)


def test_a_graceful_server_restart_is_a_clean_close_and_the_gateway_converges_within_5s(stack):
    agent = stack.start_agent()
    open_entry(stack, ALLOWED)

    stack.server.stop()   # SIGTERM, and wait for the exit
    url = stack.server.ws_url
    agent.wait_log("server %s closed the connection: 1001 server stopping; reconnect" % url)
    wait_until(lambda: sample(scrape(stack.topo.gw), "og_gateway_connected") == 0, timeout=10,
               what="the agent disconnected")
    after_close = agent.log_since_start().split("closed the connection: 1001", 1)[1]
    assert "connection to %s lost" % url not in agent.log_since_start()
    # It tries again within a second, and keeps doing so while the server is down: no backoff.
    delays = [float(d) for d in re.findall(r"reconnecting in ([\d.]+)s", after_close)]
    assert delays and max(delays) <= 1.0, delays

    restarted = time.monotonic()
    stack.server.start()
    answering = time.monotonic() - restarted
    stack.server.add(OTHER)
    # The requirement (issue 14): converged within 5 s. Counted from the moment the new server answers, since
    # its start-up (gunicorn, migrations) is what a loaded machine stretches (3-16 s seen at load 13-15); what the
    # agent controls, reconnecting at once and taking the delta, must fit 5 s. Both times are printed.
    deadline = restarted + answering + 5.0

    def in_kernel():
        return OTHER + "/32" in kernel_elements(stack.topo.gw)
    wait_until(lambda: in_kernel() or time.monotonic() > deadline, timeout=30, interval=0.05,
               what="the new entry in the gateway's kernel, or the 5 s deadline")
    took = time.monotonic() - restarted
    print("graceful restart: server answering after %.2fs, the entry in the kernel after %.2fs" % (answering, took))
    assert (in_kernel(), took - answering <= 5.0) == (True, True), "%.2fs after the server answered" % (took - answering)
    stack.wait_converged()
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32", OTHER + "/32"]
    assert stack.topo.reaches(OTHER)


def test_deletes_made_while_the_agent_is_cut_off_apply_on_reconnect(stack):
    agent = stack.start_agent()
    first = open_entry(stack, ALLOWED)
    open_entry(stack, "203.0.113.10")

    # Cut the gateway off the server: new connections are reset, the current one is torn down (ss -K).
    block = ["OUTPUT", "-d", "10.99.0.2", "-p", "tcp", "--dport", "8080", "--syn", "-j", "REJECT",
             "--reject-with", "tcp-reset"]
    stack.topo.gw.run(["iptables", "-I"] + block)
    stack.topo.gw.run(["ss", "-K", "dst", "10.99.0.2"])
    wait_until(lambda: not stack.server.gateway()["connected"], timeout=20, what="server seeing the gateway gone")
    assert sample(scrape(stack.topo.gw), "og_gateway_connected") == 0
    stack.server.delete(first["id"])
    stack.server.add(OTHER)
    assert stack.topo.reaches(ALLOWED)  # not applied yet: the agent cannot hear the server
    assert not stack.server.converged()

    stack.topo.gw.run(["iptables", "-D"] + block)
    stack.wait_converged(timeout=60)
    gw = stack.server.gateway()
    assert (gw["connected"], gw["digest_match"], gw["elements"], gw["lag"]) == (True, True, 2, 0)
    assert kernel_elements(stack.topo.gw) == ["198.51.100.20/32", "203.0.113.10/32"]
    assert refused(stack, ALLOWED)
    assert stack.topo.reaches(OTHER)
    assert agent.alive()


def test_metrics_count_the_bytes_of_a_transfer_at_scrape_time(stack, tmp_path):
    stack.start_agent()
    open_entry(stack, ALLOWED)
    gw = stack.topo.gw
    assert http_status(gw, "http://127.0.0.1:9900/healthz") == "200"

    before = scrape(gw)
    outputguard_in = sample(before, "iptables_bytes_count", ip=ALLOWED, type="INPUT", hostname="gw1")
    og_in = sample(before, "og_gateway_bytes_total", address=ALLOWED + "/32", direction="in")
    outputguard_out = sample(before, "iptables_bytes_count", ip=ALLOWED, type="OUTPUT", hostname="gw1")
    og_out = sample(before, "og_gateway_bytes_total", address=ALLOWED + "/32", direction="out")
    entry_in = sample(before, "og_gateway_entry_bytes_total", entry=ALLOWED, direction="in", shared="false") or 0
    n = 3000000
    assert stack.topo.curl(ALLOWED, "/bytes/%d" % n, timeout=20) == (0, n)

    # One scrape right after the transfer already shows it (counters are read when scraped).
    after = scrape(gw)
    assert sample(after, "iptables_bytes_count", ip=ALLOWED, type="INPUT", hostname="gw1") >= outputguard_in + n
    assert sample(after, "og_gateway_bytes_total", address=ALLOWED + "/32", direction="in") >= og_in + n
    # ... and per entry: the server names the entries behind each element.
    assert sample(after, "og_gateway_entry_bytes_total", entry=ALLOWED, direction="in", shared="false") >= entry_in + n
    assert sample(after, "iptables_packets_count", ip=ALLOWED, type="INPUT", hostname="gw1") >= n // 65535
    # The request and ACKs went the other way: far fewer bytes.
    assert sample(after, "iptables_bytes_count", ip=ALLOWED, type="OUTPUT", hostname="gw1") - outputguard_out < n // 4
    assert sample(after, "og_gateway_bytes_total", address=ALLOWED + "/32", direction="out") - og_out < n // 4

    # Client -> internet is OUTPUT.
    m = 2000000
    body = tmp_path / "upload.bin"
    body.write_bytes(b"u" * m)
    res = stack.topo.client.run(["curl", "-sS", "-m", "20", "-H", "Expect:", "--data-binary", "@%s" % body,
                                 "http://%s/sink" % ALLOWED])
    assert res.stdout.strip() == str(m)
    after_upload = scrape(gw)
    assert sample(after_upload, "iptables_bytes_count", ip=ALLOWED, type="OUTPUT", hostname="gw1") >= outputguard_out + m
    assert sample(after_upload, "og_gateway_bytes_total", address=ALLOWED + "/32", direction="out") >= og_out + m
    assert sample(after_upload, "og_gateway_applied_revision") == stack.server.gateway()["head"]
    assert sample(after_upload, "og_gateway_server_revision") == stack.server.gateway()["head"]
    assert sample(after_upload, "og_gateway_lag_revisions") == 0
    assert sample(after_upload, "og_gateway_last_contact_timestamp_seconds") > 0
    assert sample(after_upload, "og_gateway_connected") == 1
    # promtool (Prometheus' own linter) finds nothing to object to in a real scrape.
    text = gw.run(["curl", "-sS", "-m", "5", "--fail", "http://127.0.0.1:9900/metrics"]).stdout
    assert promtool_problems(text) == []


def snapshots_sent(stack, name="gw1"):
    """{reason: count} of og_server_snapshots_sent_total for one gateway, from the server's /metrics."""
    _status, text = stack.server.api("GET", "/metrics")
    found = re.findall(r'^og_server_snapshots_sent_total\{gateway="%s",reason="(\w+)"\} (\S+)$' % name, text, re.M)
    return {reason: int(float(value)) for reason, value in found}


def test_an_ipv6_entry_on_an_ipv4_only_gateway_costs_deltas_and_it_is_in_sync(stack):
    """The real agent (IPv6 off, the default) states its holds; the real server filters the same way."""
    v6 = stack.server.add("2001:db8::1")
    agent = stack.start_agent()
    open_entry(stack, ALLOWED)
    stack.server.add("2001:db8::2")
    stack.server.add(OTHER)
    stack.wait_converged()
    assert snapshots_sent(stack) == {"first": 1}
    gw = stack.server.gateway()
    assert (gw["in_sync"], gw["elements"], gw["status"]) == (True, 2, "in sync; not enforced: 2 skipped: no IPv6")
    # What differs and why, element by element: the two IPv6 addresses, skipped because the gateway has no IPv6.
    assert gw["differences"] == [{"kind": "skipped", "reason": "no_ipv6", "label": "skipped: no IPv6", "count": 2,
                                  "elements": [{"element": e, "message": "IPv6 is off on this gateway"}
                                               for e in ("2001:db8::1/128", "2001:db8::2/128")]}]
    assert kernel_elements(stack.topo.gw) == [ALLOWED + "/32", OTHER + "/32"]
    _status, entry = stack.server.api("GET", "/api/v1/entries/%d" % v6["id"])
    assert entry["elements"] == [{"element": "2001:db8::1/128", "not_enforced": [
        {"gateway": "gw1", "reason": "family_disabled", "message": "IPv6 is off on this gateway"}]}]
    # A restart: the restored state's digest is what the server expects of this gateway, so a delta follows.
    agent.kill9()
    stack.server.add("2001:db8::3")
    agent.start()
    wait_until(lambda: "applied delta" in agent.log_since_start(), timeout=30, what="the delta after the restart")
    stack.wait_converged()
    assert snapshots_sent(stack) == {"first": 1}
