# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """What every module of the collection shares: its attributes, its exit contract and its authors.

    A module's own attribute entries win over these, so a module gives only the descriptions that differ.
    """

    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description: Reads the real state, reports what would change and changes nothing.
  diff_mode:
    support: full
    description: With C(--diff), returns the state before and after the task as sorted text; without it, no diff.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed host (or the controller, for the modules that talk to the server's API).
notes:
  - Every exit returns the same keys, failure included. The keys documented as returned C(always) are there
    on success and on failure, and a failure adds C(msg) and the keys documented as returned C(failure)
    (each with the value its description gives when it does not apply to the error). C(diff) is there only with C(--diff). Only a bad option
    (an unknown name, a wrong type or choice) fails with C(msg) alone, because Ansible rejects it before the
    module runs.
author:
  - outputguard.egress contributors (@outputguard)
"""
