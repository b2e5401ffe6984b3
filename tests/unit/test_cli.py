"""The console scripts: outputGuard-compatible flags, tokens from the command line, exit 2 with a clear message."""

import os
import subprocess
import sys

import pytest
import yaml

# Not tests.support's: tests/unit also runs under ansible-test units, from the tarball, which has no tests/support.
BIN = os.path.dirname(sys.executable)


def run(name, *args, env=None):
    return subprocess.run([os.path.join(BIN, name)] + list(args), capture_output=True, text=True, timeout=60,
                          check=False, env=dict(os.environ, **(env or {})))


@pytest.fixture
def server_conf(tmp_path):
    path = tmp_path / "server.yml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "secret_key": "k" * 32,
                                    "database_url": "sqlite:///%s" % (tmp_path / "data" / "og.db")}))
    return path


@pytest.mark.parametrize("flag", ["--config", "-server-conf-path"])
def test_og_server_token_create_prints_a_token_that_writes(server_conf, flag):
    done = run("og-server", flag, str(server_conf), "token", "create", "--role", "admin")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert len(token) >= 32 and "\n" not in token

    from server_app import create_app, init_db
    app = create_app(config_path=str(server_conf))
    init_db(app)
    client = app.test_client()
    created = client.post("/api/v1/entries", json={"target": "198.51.100.10"},
                          headers={"Authorization": "Bearer " + token})
    assert created.status_code == 201, created.get_json()
    assert client.post("/api/v1/entries", json={"target": "198.51.100.11"},
                       headers={"Authorization": "Bearer x" + token}).status_code == 401


def test_og_server_token_ensure_refuses_an_empty_secret_naming_the_variable(server_conf):
    done = run("og-server", "--config", str(server_conf), "token", "ensure", "--role", "gateway", "--name", "gw1",
               "--from-env", "OG_TEST_EMPTY", env={"OG_TEST_EMPTY": ""})
    assert done.returncode == 2
    assert "OG_TEST_EMPTY" in done.stderr


def test_og_server_bad_config_is_exit_2_naming_the_setting(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("min_prefix_v4: 99\n")
    done = run("og-server", "--config", str(path), "db", "upgrade")
    assert done.returncode == 2
    assert "min_prefix_v4" in done.stderr


def test_og_gateway_agent_accepts_outputguards_server_flag():
    from gateway_agent import config
    # The seed's flag means ws:// (clear text): beyond loopback it needs --allow-insecure-transport (docs/tls.md).
    cfg = config.load(["-iptables-wss-server", "10.0.0.5:8080", "--token", "t" * 32, "--client-network",
                       "10.77.0.0/24", "--outside-interface", "out0", "--allow-insecure-transport"])
    assert cfg["servers"] == ["ws://10.0.0.5:8080/ws/gateway"]


def test_og_gateway_agent_bad_input_is_exit_2_naming_each_problem():
    done = run("og-gateway-agent", "--server", "http://x", "--client-network", "10.0.0.0/33")
    assert done.returncode == 2
    for words in ("'http://x'", "10.0.0.0/33", "no token", "no outside interface"):
        assert words in done.stderr


@pytest.mark.parametrize("args, words", [
    ([], "no gateway given"),
    (["--gateway", "gw.example"], "'gw.example' is not an IP address"),
    (["-iptables-gateway", "10.77.0.1", "--exclude", "10.0.0.0/99"], "'10.0.0.0/99' is not a network"),
    (["--gateway", "10.77.0.1", "--health-port", "70000"], "--health-port 70000"),
])
def test_og_route_bad_input_is_exit_2_naming_the_value(args, words):
    done = run("og-route", *args)
    assert done.returncode == 2
    assert words in done.stderr


def test_og_route_accepts_outputguards_gateway_flag():
    from route_agent.cli import parser, validate
    args = parser().parse_args(["-iptables-gateway", "10.77.0.1", "--gateway", "10.77.0.2"])
    assert args.gateways == ["10.77.0.1", "10.77.0.2"] and validate(args) == []
