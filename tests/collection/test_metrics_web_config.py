"""The roles' metrics web config (roles/service/tasks/webconfig.yml, used by the gateway and route roles): plain
passwords in the variables become bcrypt hashes, the certificate comes from the server role's CA or from files on
the controller, the file is what og_webconfig.load (which the agent, og-dns and og-route read it with) accepts, a
rerun changes nothing, and bad variables fail before anything is written, naming the variable and the fix.

ansible-playbook runs the task file on localhost into a temporary folder (the collection through a symlink to
this tree, tests/support/ansiblelib.py); the CA is made with the same openssl command as the server role's."""

import json
import os
import re
import stat
import subprocess

import bcrypt
import pytest
from cryptography import x509

from og_kernel import og_webconfig
from tests.support.ansiblelib import Ansible
from tests.support.tlslib import CA

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The web config
      ansible.builtin.include_role:
        name: outputguard.egress.service
        tasks_from: webconfig
      vars:
        og_service_web_var: og_gateway_metrics_web_config
        og_service_web_config: "{{ web }}"
        og_service_web_file: "{{ folder }}/metrics-web.yml"
        og_service_web_stem: metrics
        og_service_web_cert_src: "{{ cert_src | default('') }}"
        og_service_web_key_src: "{{ key_src | default('') }}"
        og_service_web_ca: "{{ from_ca | default(false) }}"
        og_service_web_names: "{{ names | default(['gw1.test', '10.86.0.1']) }}"
        og_service_web_days: 365
        og_service_web_ca_dir: "{{ ca_dir }}"
    - name: What the daemon is told
      ansible.builtin.debug:
        msg: "web={{ og_service_web | to_json }}"
"""


@pytest.fixture
def play(tmp_path):
    path = tmp_path / "play.yml"
    path.write_text(PLAY)
    ansible = Ansible(tmp_path)
    folder = tmp_path / "host" / "etc" / "outputguard"
    folder.mkdir(parents=True)
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()

    def run(**extra):
        return ansible.playbook(str(path), dict({"folder": str(folder), "ca_dir": str(ca_dir)}, **extra))

    return run, folder, ca_dir


def told(out):
    """og_service_web, the fact the calling role passes on to the daemon (the play's last task prints it)."""
    (msg,) = re.findall(r'"msg": "web=(.*)"$', out, re.M)
    return json.loads(json.loads('"%s"' % msg))


def make_ca(ca_dir):
    """The CA as the server role makes it (roles/server/tasks/tls.yml)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
                    "-sha256", "-keyout", str(ca_dir / "ca.key"), "-out", str(ca_dir / "ca.crt"), "-days", "3650",
                    "-subj", "/CN=outputguard.egress CA", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)


def test_plain_passwords_become_bcrypt_hashes_the_ca_issues_the_certificate_and_a_rerun_changes_nothing(play):
    run, folder, ca_dir = play
    make_ca(ca_dir)
    web = {"basic_auth_users": {"prometheus": "s3cret-scrape", "grafana": "other-pass"},
           "tls_server_config": {"min_version": "TLS13"}}
    recap, out = run(web=web, from_ca=True)
    assert recap["failed"] == 0 and recap["changed"] >= 4, out   # issue, key, certificate, web config
    assert "s3cret-scrape" not in out and "other-pass" not in out
    config = og_webconfig.load(str(folder / "metrics-web.yml"))   # what the daemons do at start (loads the pair)
    assert config.tls == {"cert_file": str(folder / "metrics.crt"), "key_file": str(folder / "metrics.key"),
                          "min_version": "TLS13"}
    assert sorted(config.users) == ["grafana", "prometheus"]
    assert bcrypt.checkpw(b"s3cret-scrape", config.users["prometheus"].encode())
    assert not bcrypt.checkpw(b"s3cret-scrape", config.users["grafana"].encode())
    assert config.users["prometheus"].startswith("$2b$12$")
    assert stat.S_IMODE(os.stat(folder / "metrics.key").st_mode) == 0o600
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca_dir / "ca.crt"), str(folder / "metrics.crt")],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cert = x509.load_pem_x509_certificate((folder / "metrics.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw1.test"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.86.0.1"]
    web_file, cert_file, key_file = (str(folder / name) for name in ("metrics-web.yml", "metrics.crt", "metrics.key"))
    assert told(out) == {"enabled": True, "tls": True, "file": web_file, "files": [web_file, cert_file, key_file]}
    before = {name: (folder / name).read_bytes() for name in ("metrics-web.yml", "metrics.crt", "metrics.key")}

    recap, out = run(web=web, from_ca=True)
    assert recap["failed"] == 0 and recap["changed"] == 0, out
    assert {name: (folder / name).read_bytes() for name in before} == before

    # A new password: only the web config changes, and holds the new one's hash.
    web["basic_auth_users"]["prometheus"] = "new-pass"
    recap, out = run(web=web, from_ca=True)
    assert recap["failed"] == 0 and recap["changed"] == 1, out
    assert bcrypt.checkpw(b"new-pass", og_webconfig.load(str(folder / "metrics-web.yml")).users["prometheus"].encode())
    assert (folder / "metrics.crt").read_bytes() == before["metrics.crt"]

    # New names: a new certificate.
    recap, out = run(web=web, from_ca=True, names=["gw1.test", "10.86.0.5"])
    assert recap["failed"] == 0 and recap["changed"] >= 2, out
    cert = x509.load_pem_x509_certificate((folder / "metrics.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.86.0.5"]

    # Off: the web config goes, the daemons are told plain HTTP.
    recap, out = run(web={})
    assert recap["failed"] == 0, out
    assert not (folder / "metrics-web.yml").exists()
    assert told(out) == {"enabled": False, "tls": False, "file": web_file, "files": []}


def test_files_on_the_controller_or_on_the_host_and_basic_auth_alone(play, tmp_path):
    run, folder, _ca_dir = play
    ca = CA(tmp_path / "pki")
    cert, key, _serial = ca.issue(["gw1.test"], "own")
    recap, out = run(web={}, cert_src=cert, key_src=key)
    assert recap["failed"] == 0, out
    config = og_webconfig.load(str(folder / "metrics-web.yml"))
    assert config.tls == {"cert_file": str(folder / "metrics.crt"), "key_file": str(folder / "metrics.key")}
    assert (folder / "metrics.crt").read_bytes() == open(cert, "rb").read() and config.users == {}

    # tls_server_config with files already on the host: taken as they are, nothing installed.
    (folder / "metrics.crt").unlink()
    recap, out = run(web={"tls_server_config": {"cert_file": cert, "key_file": key}})
    assert recap["failed"] == 0, out
    assert og_webconfig.load(str(folder / "metrics-web.yml")).tls == {"cert_file": cert, "key_file": key}
    assert not (folder / "metrics.crt").exists()

    recap, out = run(web={"basic_auth_users": {"prometheus": "pw"}})
    assert recap["failed"] == 0, out
    config = og_webconfig.load(str(folder / "metrics-web.yml"))
    assert config.tls is None and bcrypt.checkpw(b"pw", config.users["prometheus"].encode())
    assert told(out)["tls"] is False and told(out)["enabled"] is True


@pytest.mark.parametrize("extra, words", [
    ({"web": {"tls_server_config": {"min_version": "TLS10"}}, "from_ca": True}, ["min_version", "TLS12 or TLS13"]),
    ({"web": {"tls_config": {}}}, ["og_gateway_metrics_web_config must be a mapping", "Given: tls_config"]),
    ({"web": {"basic_auth_users": {"prometheus": ""}}}, ["basic_auth_users (user name without ':' -> plain password"]),
    ({"web": {"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key"}}, "from_ca": True},
     ["exactly one of"]),
    ({"web": {"tls_server_config": {"min_version": "TLS12"}}}, ["exactly one of"]),
    ({"web": {}, "from_ca": True}, ["holds no ca.crt and ca.key: run playbooks/server.yml first"]),
    ({"web": {}, "cert_src": "/nonexistent.crt", "key_src": "/nonexistent.key"}, ["/nonexistent.crt"]),
])
def test_bad_variables_fail_before_anything_is_written_naming_the_fix(play, extra, words):
    run, folder, _ca_dir = play
    recap, out = run(**extra)
    assert recap["failed"] == 1, out
    for word in words:
        assert word in out, out
    assert os.listdir(folder) == []
