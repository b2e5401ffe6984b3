"""Fixtures for the gateway agent tests: a gateway namespace, a scripted server, the real server stack."""

import os

import pytest

from tests.support.agentlib import TOKEN, AgentProcess, ScriptedServer, ServerProcess, Topology, unique_tag, wait_until


@pytest.fixture
def gwns(netns_factory, monkeypatch):
    """A gateway namespace with an outside interface (one end of a veth pair): enough for the kernel work."""
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    ns = netns_factory(unique_tag() + "gw")
    ns.ip("link", "add", "og-out", "type", "veth", "peer", "name", "og-peer")
    ns.ip("link", "set", "og-out", "up")
    return ns


@pytest.fixture
def scripted(gwns):
    server = ScriptedServer(gwns.name)
    yield server
    server.close()


@pytest.fixture
def start_agent(gwns, scripted, tmp_path):
    """start_agent(extra=(), servers=None) -> a running AgentProcess in gwns talking to the scripted server."""
    started = []

    def start(extra=(), servers=None, workdir=None):
        agent = AgentProcess(gwns, workdir or tmp_path / "agent", servers or [scripted.url], TOKEN, extra=extra)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        if agent.alive():
            agent.kill9()


class Stack:
    """The real thing: client, gateway (agent), internet and server namespaces, og-server and og-gateway-agent."""

    def __init__(self, netns_factory, workdir, settings=None):
        self.topo = Topology(netns_factory, unique_tag())
        self.server = ServerProcess(self.topo.srv, workdir / "server", settings=settings).start()
        self.workdir = workdir
        self.agent = None

    def start_agent(self, extra=()):
        if self.agent is None:
            self.agent = AgentProcess(self.topo.gw, self.workdir / "agent", [self.server.ws_url],
                                      self.server.gateway_token, extra=extra)
        self.agent.ns = self.topo.gw  # the gateway may have been rebuilt
        self.agent.start()
        return self.agent

    def wait_converged(self, timeout=20):
        wait_until(self.server.converged, timeout=timeout, interval=0.1,
                   what="gateway acknowledging the server's head revision with its digest")


def _stack(netns_factory, tmp_path, monkeypatch, settings=None):
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    s = Stack(netns_factory, tmp_path, settings)
    yield s
    for proc in (s.agent.proc if s.agent else None, s.server.proc):
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def stack(netns_factory, tmp_path, monkeypatch):
    yield from _stack(netns_factory, tmp_path, monkeypatch)


@pytest.fixture
def quiet_stack(netns_factory, tmp_path, monkeypatch):
    """The stack with the server's resolver off: domain entries stay without addresses, no DNS server is asked."""
    yield from _stack(netns_factory, tmp_path, monkeypatch, {"resolver_enabled": False})
