"""site.yml through ansible-runner the way AWX runs a job template, against a lab of its own (prefix ogr-).

AWX writes a private data directory (project/, inventory/, env/extravars, env/envvars, env/settings), answers no
prompts, runs `ansible_runner.run(...)` and reads the job's events. The same happens here, and the job's status,
rc and events are checked; the fleet it rolled out is then asked whether every gateway follows the server.
"""

import glob
import os
import shutil
import subprocess

import pytest
import yaml

from tests.support import TOP, prefixes
from tests.support.lablib import probe, running_lab
from tests.support.nslib import wait_until

HOSTS = ["client1", "client2", "gw1", "gw2", "server"]
# The modules each tier must have run: the kernel work happens through them.
MODULE_BY_HOST = {"gw1": "outputguard.egress.og_iptables_allow", "gw2": "outputguard.egress.og_iptables_allow",
                  "client1": "outputguard.egress.og_public_routes", "client2": "outputguard.egress.og_public_routes"}


@pytest.fixture(scope="module")
def lab():
    # OG_RUNNER_PREFIX lets two runs on one machine keep out of each other's way.
    with running_lab(prefixes()["OG_RUNNER_PREFIX"], "/run/og-molecule-runner-%d" % os.getpid()) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The collection as users get it (and as execution-environment.yml puts it in the image): the tarball of
    `ansible-galaxy collection build`, installed with `ansible-galaxy collection install`."""
    where = tmp_path_factory.mktemp("collection")
    galaxy = os.path.join(TOP, ".venv", "bin", "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", TOP, "--output-path", str(where)], check=True,
                   capture_output=True, timeout=300)
    tarball, = glob.glob(str(where / "outputguard-egress-*.tar.gz"))
    subprocess.run([galaxy, "collection", "install", tarball, "-p", str(where / "collections")], check=True,
                   capture_output=True, timeout=300)
    return str(where / "collections")


def private_data_dir(root, lab, extravars, collections, fleet=True):
    """A private data directory as AWX lays it out for a job: the project (the installed collection's
    playbooks), the inventory (the lab, or none for a job that runs on localhost), and the extra vars that
    credentials, template and survey give."""
    shutil.copytree(os.path.join(collections, "ansible_collections", "outputguard", "egress", "playbooks"),
                    os.path.join(root, "project", "playbooks"))
    if fleet:
        shutil.copytree(os.path.join(TOP, "inventories", "lab"), os.path.join(root, "inventory"),
                        ignore=shutil.ignore_patterns("ansible.cfg"))
    else:
        os.makedirs(os.path.join(root, "inventory"))
        with open(os.path.join(root, "inventory", "hosts"), "w") as fh:
            fh.write("localhost ansible_connection=local ansible_python_interpreter=%s\n"
                     % os.path.join(TOP, ".venv", "bin", "python"))
    os.makedirs(os.path.join(root, "env"))

    def write(name, data):
        with open(os.path.join(root, "env", name), "w") as fh:
            yaml.safe_dump(data, fh)

    write("extravars", extravars)
    # No prompt is expected: a prompt would be a job hanging in AWX.
    write("passwords", {})
    # The execution environment: the installed collection and the lab's environment.
    write("envvars", {
        "ANSIBLE_COLLECTIONS_PATH": collections,
        "PATH": os.path.join(TOP, ".venv", "bin") + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "OG_LAB_PREFIX": lab.prefix, "OG_LAB_DIR": lab.dir, "OG_VENV": os.path.join(TOP, ".venv"),
        "OG_REFUSE_ROOT_NETNS": "1",
    })
    write("settings", {"idle_timeout": 300, "job_timeout": 600, "pexpect_timeout": 5,
                       "suppress_ansible_output": True})
    return root


def lab_secrets(lab):
    with open(os.path.join(lab.dir, "secrets.yml")) as fh:
        return yaml.safe_load(fh)


def checked_events(result):
    """The job's events, after checking that it succeeded with no failed or unreachable host."""
    events = list(result.events)
    failed = [(e["event_data"].get("host"), e["event_data"].get("task"), e["event_data"].get("res", {}).get("msg"))
              for e in events if e["event"] in ("runner_on_failed", "runner_on_unreachable")]
    assert (result.status, result.rc, failed) == ("successful", 0, [])
    return events


@pytest.fixture(scope="module")
def rollout(lab, collection, tmp_path_factory):
    """The "rollout" job template: site.yml of the installed tarball on the lab; the credential injects the
    secrets as extra vars."""
    import ansible_runner

    root = private_data_dir(str(tmp_path_factory.mktemp("rollout") / "job"), lab, lab_secrets(lab), collection)
    return ansible_runner.run(private_data_dir=root, playbook="playbooks/site.yml", quiet=True)


# Slow (about 40 s): a lab of its own, rolled out from the built tarball through ansible-runner as AWX does.
@pytest.mark.timeout(600)
def test_site_runs_through_ansible_runner_like_awx(lab, rollout):
    events = checked_events(rollout)

    stats = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1
    assert (stats[0]["failures"], stats[0]["dark"]) == ({}, {})
    assert sorted(stats[0]["ok"]) == HOSTS

    oks = [e["event_data"] for e in events if e["event"] == "runner_on_ok"]
    assert sorted({ok["host"] for ok in oks}) == HOSTS
    # Each tier ran its own role, and the kernel modules ran on the hosts they are for.
    assert {ok["host"]: ok["role"] for ok in oks if ok.get("role") in ("server", "gateway", "route")} == {
        "server": "server", "gw1": "gateway", "gw2": "gateway", "client1": "route", "client2": "route"}
    ran = {(ok["host"], ok["resolved_action"]) for ok in oks}
    assert set(MODULE_BY_HOST.items()) <= ran
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    assert plays == ["Deploy the server", "Deploy the gateways", "Route the clients' public traffic to the gateways"]

    # The rollout works: both gateways follow the server at its head revision.
    def following():
        items = lab.api("GET", "/api/v1/gateways").json()["items"]
        return sorted(gw["name"] for gw in items if gw["connected"] and gw["lag"] == 0) == ["gw1", "gw2"]

    wait_until(following, timeout=30, what="gw1 and gw2 connected at the head revision")


def entry_job(lab, root, state, collection, **survey):
    """The "add entry" / "remove entry" job templates of docs/awx.md: survey answers plus the template's extra
    vars (which turn them into og_entries) plus the credential's token."""
    template = {
        "og_api_url": lab.url,
        "og_entries": [{"target": "{{ entry_target }}", "ports": "{{ entry_ports | default('') | split }}",
                        "state": state}],
    }
    if state == "present":
        template["og_entries"][0]["comment"] = "{{ entry_comment | default('') }}"
    extravars = dict(template, og_api_token=lab_secrets(lab)["og_server_admin_token"], **survey)
    import ansible_runner

    return ansible_runner.run(private_data_dir=private_data_dir(root, lab, extravars, collection, fleet=False),
                              playbook="playbooks/entries.yml", quiet=True)


@pytest.mark.timeout(600)
def test_entry_survey_jobs_add_and_remove_an_entry_live(lab, rollout, collection, tmp_path):
    checked_events(rollout)
    entries = lab.api("GET", "/api/v1/entries").json()["items"]
    assert [e for e in entries if e["target"].startswith("198.51.100.10")] == []
    assert probe(lab, "c1", "198.51.100.10", 8443) == "refused"

    added = entry_job(lab, str(tmp_path / "add"), "present", collection, entry_target="198.51.100.10",
                      entry_ports="8443/tcp", entry_comment="CHG-1 runner test")
    changed = [e["event_data"]["task"] for e in checked_events(added)
               if e["event"] == "runner_on_ok" and e["event_data"]["res"].get("changed")]
    assert changed == ["Ensure the listed entries"]
    entry = [e for e in lab.api("GET", "/api/v1/entries").json()["items"] if e["target"].startswith("198.51.100.10")]
    assert [(e["ports"], e["comment"]) for e in entry] == [(["8443/tcp"], "CHG-1 runner test")]
    wait_until(lambda: probe(lab, "c1", "198.51.100.10", 8443) == "ok", timeout=15, what="8443 reachable")
    assert probe(lab, "c1", "198.51.100.10", 80) == "refused"

    removed = entry_job(lab, str(tmp_path / "remove"), "absent", collection, entry_target="198.51.100.10",
                        entry_ports="8443/tcp")
    checked_events(removed)
    assert [e for e in lab.api("GET", "/api/v1/entries").json()["items"]
            if e["target"].startswith("198.51.100.10")] == []
    wait_until(lambda: probe(lab, "c1", "198.51.100.10", 8443) == "refused", timeout=15, what="8443 refused")


@pytest.mark.timeout(600)
def test_check_mode_of_the_rollout_on_the_deployed_fleet_changes_and_fails_nothing(lab, rollout, collection,
                                                                                   tmp_path):
    """The "rollout (check)" job template: site.yml with --check --diff, every role and module in check mode."""
    import ansible_runner

    checked_events(rollout)
    root = private_data_dir(str(tmp_path / "check"), lab, lab_secrets(lab), collection)
    events = checked_events(ansible_runner.run(private_data_dir=root, playbook="playbooks/site.yml",
                                               cmdline="--check --diff", quiet=True))
    stats = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"][0]
    assert sorted(stats["ok"]) == HOSTS
    changed = [(e["event_data"]["host"], e["event_data"]["task"]) for e in events
               if e["event"] == "runner_on_ok" and e["event_data"]["res"].get("changed")]
    assert (stats["changed"], changed) == ({}, [])
