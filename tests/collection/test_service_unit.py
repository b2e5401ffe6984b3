"""The systemd unit the service role writes changes exactly when the daemon's command line, environment,
configuration files or installed code change, so that systemd.yml's "changed unit: daemon-reload and restart"
restarts it then and only then. PID 1 is not systemd here: the role's fingerprint and unit template run against
localhost into a temporary folder, and the unit's changes are read from the template task's result."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.support import BIN, TOP


SERVICE = os.path.join(TOP, "roles", "service")

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    og_service_name: og-server
    og_service_description: ""
    og_service_user: root
    og_service_capabilities: []
    og_service_read_write_paths: []
  tasks:
    - name: Fingerprint
      ansible.builtin.include_tasks: {service}/tasks/fingerprint.yml
    - name: The unit systemd.yml installs
      ansible.builtin.template:
        src: {service}/templates/service.unit.j2
        dest: "{{{{ unit }}}}"
        mode: "0644"
      register: written
    - name: Whether the unit changed
      ansible.builtin.debug:
        msg: "unit changed={{{{ written is changed }}}}"
"""


@pytest.fixture
def rollout(tmp_path):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(service=SERVICE))
    config = tmp_path / "server.yml"
    config.write_text("listen: 0.0.0.0:8080\n")

    def run(exec_=None, environment=None):
        extra = {"og_venv": os.path.dirname(BIN), "unit": str(tmp_path / "og-server.service"),
                 "og_service_exec": exec_ or [os.path.join(BIN, "og-server"), "--config", str(config)],
                 "og_service_config_files": [str(config)], "og_service_environment": environment or {},
                 "ansible_python_interpreter": sys.executable}
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(play),
                               "-e", json.dumps(extra)], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0",
                                       ANSIBLE_INVENTORY_UNPARSED_WARNING="0"), check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        return "unit changed=True" in proc.stdout

    return run, config, tmp_path / "og-server.service"


def test_the_unit_changes_exactly_when_what_the_daemon_runs_with_changes(rollout):
    run, config, unit = rollout
    assert run() is True
    assert run() is False
    config.write_text("listen: 0.0.0.0:8081\n")
    assert run() is True
    assert ("# config %s sha256:%s" % (config, hashlib.sha256(config.read_bytes()).hexdigest())
            in unit.read_text().splitlines())
    assert run() is False
    debug = [os.path.join(BIN, "og-server"), "--config", str(config), "--debug"]
    assert run(exec_=debug) is True
    assert run(exec_=debug) is False
    assert run(exec_=debug, environment={"OG_LOG_LEVEL": "debug"}) is True
    assert 'Environment="OG_LOG_LEVEL=debug"' in unit.read_text().splitlines()
    assert run(exec_=debug, environment={"OG_LOG_LEVEL": "debug"}) is False
    assert "KillMode=control-group" in unit.read_text().splitlines()
