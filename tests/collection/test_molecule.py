"""Both Molecule scenarios on the namespace lab, end to end, as CI runs them (`molecule test -s NAME`)."""

import os
import re
import subprocess
import time

import pytest

from tests.support import TOP, free_port, prefixes
from tests.support.lablib import Lab

# scenario: the start of the variables molecule/<scenario>/molecule.yml reads its namespace prefix, folder and UI
# port from (two runs on one machine set OG_MOLECULE_PREFIX and OG_MOLECULE_SECOND_PREFIX apart).
SCENARIOS = {"default": "OG_MOLECULE", "second": "OG_MOLECULE_SECOND"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# Slow (1.5-2 min each): `molecule test` builds a whole lab, converges site.yml twice (idempotence), verifies
# with real traffic and destroys it, as a contributor runs it.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario_passes(scenario):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    variable = SCENARIOS[scenario]
    prefix = prefixes()[variable + "_PREFIX"]
    directory = "/run/og-molecule-%s-%d" % (scenario, os.getpid())
    ui_port = free_port()
    leftover = Lab(prefix, directory, ui_port)
    env = dict(os.environ, PATH=os.path.join(TOP, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""),
               NO_COLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0",
               **{variable + "_PREFIX": prefix, variable + "_DIR": directory, variable + "_UI_PORT": str(ui_port)})
    started = time.monotonic()
    try:
        proc = subprocess.run([os.path.join(TOP, ".venv", "bin", "molecule"), "test", "-s", scenario], cwd=TOP,
                              env=env, capture_output=True, text=True, timeout=840, check=False)
    finally:
        # molecule destroys the lab itself; this only catches a crash of molecule.
        leftover.lab("down", check=False)
    print("\nmolecule test -s %s: %.1f s, rc=%d" % (scenario, time.monotonic() - started, proc.returncode))
    output = ANSI.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, output[-12000:]
    # Every step of the sequence ran (none skipped for a missing playbook) and succeeded.
    # (the DETAILS block at the end: "<scenario> > <step>: Executed: <result>"; an arrow when colour is on)
    done = dict(re.findall(r"^%s (?:>|➜) (\w+): Executed: (.+?)\s*$" % scenario, output, re.M))
    steps = ["create", "converge", "idempotence", "verify", "destroy"]
    assert {step: done.get(step) for step in steps} == {step: "Successful" for step in steps}, output[-6000:]
    assert not os.path.exists(directory)
