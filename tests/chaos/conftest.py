"""The chaos stack: client -> gateway (real agent) -> internet, and two og-server replicas on one PostgreSQL."""

import os
import secrets

import pytest

from tests.support.agentlib import ALLOWED, TRAFFIC, AgentProcess, Background, ServerProcess, Topology
from tests.support.chaoslib import Writer, socket_url
from tests.support.nslib import wait_until


class Chaos:
    """Everything the faults act on; built once per test, torn down whatever happens."""

    def __init__(self, netns_factory, postgres, workdir):
        self.postgres = postgres
        # Namespaces ogt-x<tag>{c,i,s,gw}: "x" marks the chaos suite's namespaces.
        self.topo = Topology(netns_factory, "x" + secrets.token_hex(2))
        url = socket_url(postgres, postgres.create_database())
        self.a = ServerProcess(self.topo.srv, workdir / "a", 8080, database_url=url).start()
        self.b = ServerProcess(self.topo.srv, workdir / "b", 8081, database_url=url, first=self.a).start()
        self.replicas = (self.a, self.b)
        self.agent = AgentProcess(self.topo.gw, workdir / "agent", [self.a.ws_url, self.b.ws_url],
                                  self.a.gateway_token)
        self.agent.start()
        self.allowed = self.a.call("POST", "/api/v1/entries", json={"target": ALLOWED}).json()
        wait_until(lambda: self.topo.reaches(ALLOWED), timeout=60, interval=0.2,
                   what="the client reaching %s through the gateway" % ALLOWED)
        self.client = Background(self.topo.client, TRAFFIC, lambda b: [ALLOWED, b.progress_file, b.stop_file], workdir,
                                 "client")
        wait_until(lambda: self.client.progress().get("requests", 0) >= 3, timeout=30, what="client traffic")
        self.writer = Writer(self.topo.srv.name, self.replicas, self.a.admin)
        self.writer.start()

    def teardown(self):
        self.writer.finish()
        if self.client.proc.poll() is None:
            self.client.proc.kill()
            self.client.proc.wait(timeout=10)
        if self.agent.alive():
            self.agent.kill9()
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.kill9()
        if not self.postgres.running():
            self.postgres.start()


@pytest.fixture
def chaos(netns_factory, postgres, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    monkeypatch.setenv("OG_REFUSE_ROOT_NETNS", "1")
    stack = Chaos(netns_factory, postgres, tmp_path)
    yield stack
    stack.teardown()
