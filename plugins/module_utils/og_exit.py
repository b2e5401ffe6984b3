# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The exit contract of the collection's modules: the same keys on every exit, failure included.

Every exit returns ``changed`` and the module's result keys (each always there: its empty value until it is
known); ``diff`` only when the task runs with ``--diff``; and on failure ``failed``, ``msg`` and the module's
failure keys (each always there on failure: its default, the one its error class has, when it does not apply).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy

# The failure keys and their defaults: of the modules that run commands (CommandError's), and of those that
# call the server's REST API (ApiError's; status -1 is "no answer").
COMMAND_FAILURE_KEYS = {"cmd": None, "rc": None, "stdout": "", "stderr": ""}
API_FAILURE_KEYS = {"status": -1, "code": None, "url": None}


class ModuleExit(object):
    """One module's result as it builds up, and its only ways out: exit() and fail()."""

    def __init__(self, module, result, failure_keys):
        self.module = module
        self.result = copy.deepcopy(result)
        self.result.setdefault("changed", False)
        self.failure_keys = dict(failure_keys)
        self.diff_texts = {"before": "", "after": ""}

    def update(self, **values):
        """Set result keys; a key the module does not declare is a programming error."""
        unknown = sorted(set(values) - set(self.result))
        if unknown:
            raise KeyError("not result keys of this module: %s" % ", ".join(unknown))
        self.result.update(values)

    def diff(self, before, after):
        """Record the before and after texts; they are returned only when the task runs with --diff."""
        self.diff_texts = {"before": before, "after": after}

    def returned(self):
        """The keys of a successful exit (also the base of a failure)."""
        out = copy.deepcopy(self.result)
        if self.module._diff:
            out["diff"] = dict(self.diff_texts)
        return out

    def exit(self, **values):
        self.update(**values)
        self.module.exit_json(**self.returned())

    def fail(self, msg, changed=False, **details):
        """Fail with msg and every failure key (its default unless in details); changed says what was done."""
        unknown = sorted(set(details) - set(self.failure_keys))
        if unknown:
            raise KeyError("not failure keys of this module: %s" % ", ".join(unknown))
        out = self.returned()
        out.update(self.failure_keys)
        out.update(details)
        out.update(changed=changed, msg=msg)
        self.module.fail_json(**out)

    def fail_from(self, error, changed=False):
        """Fail with an error that carries its own keys (CommandError, ApiError: as_dict() with msg)."""
        details = error.as_dict()
        msg = details.pop("msg")
        self.fail(msg, changed=changed, **dict((k, v) for k, v in details.items() if k in self.failure_keys))
