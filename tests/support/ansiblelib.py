"""The collection's modules and playbooks run by the real ansible CLIs, against this working tree."""

import json
import os
import re
import subprocess
import sys

from tests.support import BIN, TOP


class Ansible:
    """Runs modules with `ansible` (inside namespace `ns` when given) and playbooks with `ansible-playbook`.

    The collection is found through a temporary ANSIBLE_COLLECTIONS_PATH whose outputguard/egress is a symlink to
    this working tree; `env` is added to every run's environment."""

    def __init__(self, tmp_path, ns=None, module=None, env=None):
        collections = tmp_path / "collections"
        (collections / "ansible_collections" / "outputguard").mkdir(parents=True)
        (collections / "ansible_collections" / "outputguard" / "egress").symlink_to(TOP)
        self.tmp = tmp_path
        self.ns = ns
        self.default_module = module
        # An inherited SSH_CONNECTION makes og_public_routes protect that path, which the tests do not expect.
        base = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
        self.env = dict(base, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(tmp_path / "home"),
                        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCALHOST_WARNING="0",
                        ANSIBLE_INVENTORY_UNPARSED_WARNING="0", OG_REFUSE_ROOT_NETNS="1", **(env or {}))

    def _run(self, argv, env, timeout):
        if self.ns is not None:
            return self.ns.run(argv, check=False, env=env, timeout=timeout)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    def module(self, name, args, *flags, env=None, timeout=180):
        """Return (status, result, printed): status is SUCCESS, CHANGED or FAILED!; printed is the diff and warnings."""
        argv = [os.path.join(BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local",
                "-m", name if "." in name else "outputguard.egress." + name, "-a", json.dumps(args),
                "-e", "ansible_python_interpreter=%s" % sys.executable] + list(flags)
        proc = self._run(argv, dict(self.env, **(env or {})), timeout)
        out = proc.stdout
        if "localhost | " not in out:
            raise AssertionError("ansible printed no result (rc=%d): %s %s" % (proc.returncode, out, proc.stderr))
        head = out.index("localhost | ")
        status = out[head:].split()[2]
        return status, json.loads(out[out.index("=>", head) + 2:]), out[:head] + proc.stderr

    def __call__(self, args, *flags, env=None):
        """module() of the module this runner was made for."""
        return self.module(self.default_module, args, *flags, env=env)

    def playbook(self, path, extra_vars, *flags, env=None, timeout=300):
        """Run the playbook at path on localhost with extra_vars (from a file, never the command line).

        Return (recap, output): recap is {"ok": n, "changed": n, "failed": n, ...} of localhost."""
        vars_file = self.tmp / "vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        proc = self._run([os.path.join(BIN, "ansible-playbook"), path, "-e", "@%s" % vars_file,
                          "-e", "ansible_python_interpreter=%s" % sys.executable] + list(flags),
                         env if env is not None else self.env, timeout)
        out = proc.stdout + proc.stderr
        match = re.search(r"^localhost\s+:\s+(.*)$", proc.stdout, re.M)
        assert match is not None, out
        recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
        assert (proc.returncode == 0) == (recap["failed"] == 0), out
        return recap, out
