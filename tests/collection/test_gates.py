"""The Ansible ecosystem's own gates on the collection as it is in the working tree right now.

A copy of the working tree (without virtualenvs, caches and git) is placed at
<tmp>/src/ansible_collections/outputguard/egress, where ansible-lint and `ansible-test sanity` run (as a
contributor runs them in the checkout, bench/ and tests/ included) and `ansible-galaxy collection build` makes
the tarball. The tarball is what users get: galaxy-importer checks it, `ansible-galaxy collection install`
installs it into <tmp>/inst, and `ansible-test units` runs on that installed copy, as Galaxy and Automation Hub
do; its files are checked to be the checkout's, byte for byte, so the one sanity run covers it too. Each test
shows the tool's output when it fails.

Tools: ansible-core 2.19 from .venv (ansible-galaxy, ansible-test, the units' Python); ansible-lint and
galaxy-importer from .venv-gates (both made by `OG_SETUP_EXTRAS=test scripts/setup`).
"""

import fnmatch
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
from xml.etree import ElementTree

import pytest

from tests.support import TOP

VENV_BIN = os.path.dirname(sys.executable)
GATES_BIN = os.path.join(TOP, ".venv-gates", "bin")
GET_PIP = os.path.expanduser("~/.ansible/test/cache/get_pip_24_2.py")
SETUP_HINT = "run `OG_SETUP_EXTRAS=test scripts/setup` (it installs the gates' tools)"

# Not copied: what the working tree has besides the collection's sources.
COPY_SKIP_TOP = {".git", ".venv", ".venv-gates", ".hypothesis", ".pytest_cache", ".ansible", "lab-state"}
COPY_SKIP_ANYWHERE = ("__pycache__", "*.egg-info", "*.pyc")
# Never in the tarball.
TARBALL_FORBIDDEN = (".venv", ".venv-gates", ".git", "__pycache__", ".hypothesis", ".pytest_cache", "lab-state",
                     "bench", "scripts", "molecule")


def run(argv, cwd, env=None, timeout=900, stdout_too=False):
    """Run a tool; return (rc, the command line and its whole output) and, with stdout_too, its stdout alone."""
    done = subprocess.run(argv, cwd=cwd, env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)
    shown = "$ %s\n%s%s" % (" ".join(argv), done.stdout, done.stderr)
    return (done.returncode, shown, done.stdout) if stdout_too else (done.returncode, shown)


def tail(text, lines=150):
    """The end of a tool's output, which is where the verdict is."""
    return "\n".join(text.splitlines()[-lines:])


def ignore_for_copy(folder, names):
    rel = os.path.relpath(folder, TOP)
    skipped = set(n for n in names if any(fnmatch.fnmatch(n, p) for p in COPY_SKIP_ANYWHERE))
    if rel == ".":
        skipped |= COPY_SKIP_TOP & set(names)
    if rel == "tests":
        skipped |= {"output"} & set(names)
    return skipped


@pytest.fixture(scope="module")
def gates_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def source(gates_tmp):
    """A copy of the working tree at .../ansible_collections/outputguard/egress (ansible-test needs that path)."""
    path = gates_tmp / "src" / "ansible_collections" / "outputguard" / "egress"
    shutil.copytree(TOP, path, symlinks=True, ignore=ignore_for_copy)
    return path


@pytest.fixture(scope="module")
def build(source, gates_tmp):
    """(rc, output, tarball path) of `ansible-galaxy collection build` on the copy."""
    dist = gates_tmp / "dist"
    rc, out = run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist)],
                  cwd=source)
    tarballs = glob.glob(str(dist / "outputguard-egress-*.tar.gz"))
    return rc, out, tarballs[0] if len(tarballs) == 1 else None


@pytest.fixture(scope="module")
def tarball(build):
    rc, out, path = build
    if rc != 0 or path is None:
        pytest.fail("ansible-galaxy collection build failed:\n" + tail(out))
    return path


@pytest.fixture(scope="module")
def install(tarball, gates_tmp):
    """(rc, output, installed collection path) of `ansible-galaxy collection install` of the tarball."""
    root = gates_tmp / "inst"
    rc, out = run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p",
                   str(root), tarball], cwd=gates_tmp)
    return rc, out, root / "ansible_collections" / "outputguard" / "egress"


@pytest.fixture(scope="module")
def installed(install):
    rc, out, path = install
    if rc != 0 or not (path / "MANIFEST.json").is_file():
        pytest.fail("ansible-galaxy collection install failed:\n" + tail(out))
    return path


def gates_tool(name):
    path = os.path.join(GATES_BIN, name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is missing: %s" % (path, SETUP_HINT))
    return path


def test_build_makes_a_tarball_of_the_collection_without_caches_or_dev_tools(build, source):
    rc, out, path = build
    assert (rc, path is not None) == (0, True), tail(out)
    with tarfile.open(path) as tar:
        names = tar.getnames()
    leaked = sorted(n for n in names if set(n.split("/")) & set(TARBALL_FORBIDDEN) or n.endswith(".pyc")
                    or n.startswith("tests/output") or ".egg-info" in n)
    assert leaked == [], "galaxy.yml build_ignore lets these into the tarball:\n" + "\n".join(leaked)
    modules = sorted(os.path.relpath(p, source) for p in glob.glob(str(source / "plugins" / "*" / "*.py")))
    roles = sorted("roles/%s/tasks/main.yml" % r for r in os.listdir(source / "roles"))
    wanted = ["MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml", "pyproject.toml",
              "changelogs/changelog.yaml", "playbooks/site.yml", "server_app/__init__.py",
              "gateway_agent/__init__.py", "route_agent/__init__.py"] + modules + roles
    assert sorted(set(wanted) - set(names)) == []


def test_the_tarball_installs_and_ansible_doc_finds_every_module(install, source):
    rc, out, path = install
    assert rc == 0, tail(out)
    with open(path / "MANIFEST.json") as fh:
        info = json.load(fh)["collection_info"]
    assert (info["namespace"], info["name"]) == ("outputguard", "egress")
    rc, out, stdout = run([os.path.join(VENV_BIN, "ansible-doc"), "--list", "--json", "-t", "module",
                           "outputguard.egress"], cwd=path, env={"ANSIBLE_COLLECTIONS_PATH": str(path.parents[2])},
                          stdout_too=True)
    assert rc == 0, tail(out)
    listed = sorted(json.loads(stdout))
    expected = sorted("outputguard.egress." + os.path.basename(p)[:-3]
                      for p in glob.glob(str(source / "plugins" / "modules" / "*.py")))
    assert listed == expected


def test_ansible_doc_renders_every_module_with_the_shared_fragments(installed, source):
    """The installed modules' documentation, fragments merged: the shared block and the API options once each."""
    names = sorted("outputguard.egress." + os.path.basename(p)[:-3]
                   for p in glob.glob(str(source / "plugins" / "modules" / "*.py")))
    rc, out, stdout = run([os.path.join(VENV_BIN, "ansible-doc"), "-t", "module", "--json"] + names, cwd=installed,
                          env={"ANSIBLE_COLLECTIONS_PATH": str(installed.parents[2])}, stdout_too=True)
    assert rc == 0, tail(out)
    docs = {name: info["doc"] for name, info in json.loads(stdout).items()}
    assert sorted(docs) == names
    shared = {name: (doc["author"], sorted(doc["attributes"]), doc["attributes"]["platform"]["platforms"],
                     any(note.startswith("Every exit returns the same keys") for note in doc["notes"]))
              for name, doc in docs.items()}
    assert shared == {name: (["outputguard.egress contributors (@outputguard)"],
                             ["check_mode", "diff_mode", "platform"], "posix", True) for name in names}
    api = ["ca_path", "server_url", "timeout", "token", "validate_certs"]
    assert {name: sorted(set(api) - set(docs[name]["options"])) for name in
            ("outputguard.egress.og_entry", "outputguard.egress.og_entry_info")} == {
        "outputguard.egress.og_entry": [], "outputguard.egress.og_entry_info": []}
    assert docs["outputguard.egress.og_entry_info"]["attributes"]["diff_mode"]["support"] == "none"
    assert docs["outputguard.egress.og_public_routes"]["attributes"]["check_mode"] == {
        "support": "full", "description": "Plans the change from the kernel's real routes and changes nothing."}


def test_galaxy_importer_accepts_the_tarball_without_warnings(tarball, gates_tmp):
    python = gates_tool("python")
    rc, out = run([python, "-m", "galaxy_importer.main", tarball], cwd=gates_tmp, env={
        # It calls ansible-doc and ansible-lint by name; its ansible-test step wants Docker.
        "PATH": GATES_BIN + os.pathsep + os.environ.get("PATH", ""),
        "GALAXY_IMPORTER_RUN_ANSIBLE_TEST": "false",
        "GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP": str(gates_tmp / "importer-tmp"),
    })
    complaints = [line for line in out.splitlines() if line.startswith(("WARNING", "ERROR", "CRITICAL"))]
    assert (rc, complaints) == (0, []), out
    assert "Importer processing completed successfully" in out, out


# Slow on a loaded machine (170 s, and past the suite's 300 s default at load 12): it lints 218 files.
@pytest.mark.timeout(900)
def test_ansible_lint_production_profile_reports_nothing(source):
    rc, out = run([gates_tool("ansible-lint"), "--offline", "--profile", "production", "-f", "pep8", "--nocolor"],
                  cwd=source, env={"ANSIBLE_COLLECTIONS_PATH": str(source.parents[2]),
                                   "PATH": GATES_BIN + os.pathsep + os.environ.get("PATH", "")})
    assert rc == 0, out


def test_sanity_ignore_files_are_empty_or_absent():
    for path in glob.glob(os.path.join(TOP, "tests", "sanity", "ignore-*.txt")):
        with open(path) as fh:
            assert fh.read().strip() == "", path


def test_every_file_of_the_installed_collection_is_the_checkouts_file(installed, source):
    """The installed tarball holds a subset of the checkout, byte for byte: the sanity run on the checkout covers it.

    Besides those files it has only MANIFEST.json and FILES.json (written by the build, which no sanity test lints).
    """
    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, dummy, names in os.walk(root) for f in names
                      if not os.path.relpath(d, root).startswith(os.path.join("tests", "output")))

    def content(path):
        with open(path, "rb") as fh:
            return fh.read()

    shipped = set(files(installed)) - {"MANIFEST.json", "FILES.json"}
    assert sorted(shipped - set(files(source))) == []
    assert [f for f in sorted(shipped) if content(installed / f) != content(source / f)] == []


# Slow (about 40 s warm, 70 s cold): ansible-test builds a virtualenv per Python version and runs 24 linters.
# One run, in the checkout, where contributors run it: its files include every file of the tarball (the test
# above), so it is the tarball's sanity run too.
@pytest.mark.timeout(1200)
def test_ansible_test_sanity_passes_in_the_checkout(source):
    assert os.path.isfile(GET_PIP), "%s is missing: %s" % (GET_PIP, SETUP_HINT)
    rc, out = run([os.path.join(VENV_BIN, "ansible-test"), "sanity", "--venv", "--python", "3.11", "--color", "no"],
                  cwd=source, env={"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}, timeout=1200)
    problems = [line for line in out.splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert (rc, problems) == (0, []), "\n".join(problems) + "\n\n" + tail(out, 60)
    assert 'Running sanity test "validate-modules"' in out, tail(out)
    assert 'Running sanity test "pylint"' in out, tail(out)


@pytest.mark.timeout(900)
def test_ansible_test_units_runs_the_module_tests_and_passes(installed):
    rc, out = run([os.path.join(VENV_BIN, "ansible-test"), "units", "--local", "--python", "3.11", "--color", "no"],
                  cwd=installed, env={"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")})
    assert rc == 0, tail(out)
    # ansible-test runs the module tests apart from the rest (its "modules" context): they must be found there.
    suite = ElementTree.parse(installed / "tests" / "output" / "junit" / "python3.11-modules-units.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    ran = set(case.get("classname") for case in suite.iter("testcase"))
    wanted = {"tests.unit.plugins.modules.test_og_iptables_allow_arguments", "tests.unit.plugins.modules.test_og_public_routes_arguments"}
    assert sorted(wanted - ran) == [], tail(out)
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), tail(out)
