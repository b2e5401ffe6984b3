"""The roles' install path for real hosts: the collection is built into a wheel on the controller, copied to the
host and installed there with pip (the host cannot read the controller's files). Run against localhost with the
local connection: it only writes into a temporary folder (no network setting is touched)."""

import os
import subprocess
import sys

import pytest

from tests.support import BIN, TOP
from tests.support.lablib import recap


PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Install og-server the way the server role does
      ansible.builtin.include_role:
        name: outputguard.egress.service
        tasks_from: install
      vars:
        og_service_name: og-server
"""


# Slow (about 30 s): a real wheel is built on the controller and installed on the hosts, twice.
@pytest.mark.timeout(900)
def test_the_collection_is_built_copied_and_installed_and_a_rerun_changes_nothing(tmp_path):
    collections = tmp_path / "collections" / "ansible_collections" / "outputguard"
    collections.mkdir(parents=True)
    (collections / "egress").symlink_to(TOP)
    (tmp_path / "play.yml").write_text(PLAY)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    extra = ["-e", "og_venv=%s" % (tmp_path / "venv"), "-e", "og_root=%s" % (tmp_path / "host"),
             "-e", "og_wheel_dir=%s" % (tmp_path / "wheels"), "-e", "ansible_python_interpreter=%s" % sys.executable]
    runs = []
    for _ in range(2):
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml")]
                              + extra, capture_output=True, text=True, env=env, timeout=800)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        runs.append(recap(proc.stdout)["localhost"])
    assert runs[0]["changed"] >= 2          # the copy and the pip install
    assert runs[1]["changed"] == 0, runs    # the same sources give the same wheel: nothing to do again
    wheels = list((tmp_path / "host" / "var" / "cache" / "outputguard").glob("outputguard_egress-*.whl"))
    assert len(wheels) == 1
    server = subprocess.run([str(tmp_path / "venv" / "bin" / "og-server"), "--help"], capture_output=True, text=True)
    assert server.returncode == 0 and "og-server" in server.stdout
    # The host's venv runs its own copy of the code, not the controller's source tree.
    where = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                            "import server_app; print(server_app.__file__)"], capture_output=True, text=True,
                           cwd=str(tmp_path))   # not the repository: '' on sys.path would find its server_app
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
