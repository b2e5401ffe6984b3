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
    for dummy in range(2):
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml")]
                              + extra, capture_output=True, text=True, env=env, timeout=800, check=False)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        runs.append(recap(proc.stdout)["localhost"])
    assert runs[0]["changed"] >= 2          # the copy and the pip install
    assert runs[1]["changed"] == 0, runs    # the same sources give the same wheel: nothing to do again
    wheels = list((tmp_path / "host" / "var" / "cache" / "outputguard").glob("outputguard_egress-*.whl"))
    assert len(wheels) == 1
    server = subprocess.run([str(tmp_path / "venv" / "bin" / "og-server"), "--help"], capture_output=True, text=True,
                            check=False)
    assert server.returncode == 0 and "og-server" in server.stdout
    # The host's venv runs its own copy of the code, not the controller's source tree.
    where = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                            "import server_app; print(server_app.__file__)"], capture_output=True, text=True,
                           cwd=str(tmp_path), check=False)  # not the repository: '' on sys.path would find its server_app
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
    # Package data by discovery: every template, static file and migration file of the source is installed, and
    # the installed server serves them.
    source = os.path.join(TOP, "server_app")
    wanted = sorted(os.path.relpath(os.path.join(d, f), source) for d, dummy, files in os.walk(source)
                    for f in files if not f.endswith((".py", ".pyc")) and "__pycache__" not in d)
    installed = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", SERVE], capture_output=True,
                               text=True, cwd=str(tmp_path), env=dict(os.environ, OG_DB=str(tmp_path / "db")),
                               check=False)
    assert installed.returncode == 0, installed.stderr
    files, static, login = installed.stdout.splitlines()
    assert files.split() == wanted
    with open(os.path.join(source, "static", "style.css"), encoding="utf-8") as fh:
        assert static == "200 %d" % len(fh.read().encode())
    assert login == "200 <title>Log in · outputguard.egress</title>"


# Run by the installed venv's Python: its server_app's data files, then what its app serves from them.
SERVE = r"""
import os, re
import server_app
from server_app import create_app
root = os.path.dirname(server_app.__file__)
print(" ".join(sorted(os.path.relpath(os.path.join(d, f), root) for d, dummy, files in os.walk(root)
                      for f in files if not f.endswith((".py", ".pyc")) and "__pycache__" not in d)))
app = create_app({"database_url": "sqlite:///%s/og.db" % os.environ["OG_DB"], "secret_key": "k" * 32,
                  "resolver_enabled": False})
client = app.test_client()
answer = client.get("/static/style.css")
print(answer.status_code, len(answer.data))
answer = client.get("/login")
print(answer.status_code, re.search(r"<title>.*</title>", answer.get_data(as_text=True)).group(0))
"""
