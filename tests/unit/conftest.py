# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make ansible_collections.outputguard.egress importable when plain pytest runs these tests from the checkout.

`ansible-test units` installs Ansible's collection loader itself; plain pytest from the repository does not,
and the checkout is not at a path ending in ansible_collections/outputguard/egress. Then a temporary
ansible_collections tree whose outputguard/egress entry is a symlink to the checkout is handed to the loader.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _loader_installed():
    return any(isinstance(finder, _AnsibleCollectionFinder) for finder in sys.meta_path)


if not _loader_installed():
    _ROOT = tempfile.mkdtemp(prefix="og-collections-")
    atexit.register(shutil.rmtree, _ROOT, True)
    os.makedirs(os.path.join(_ROOT, "ansible_collections", "outputguard"))
    os.symlink(TOP, os.path.join(_ROOT, "ansible_collections", "outputguard", "egress"))
    # pylint: disable-next=protected-access
    _AnsibleCollectionFinder(paths=[_ROOT], scan_sys_paths=False)._install()
