# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a named Linux network namespace on the controller
description:
  - Runs every command of a task through C(ip netns exec NAME), so that each network namespace on the
    controller machine can be an inventory host. Files are copied as with the local connection, since
    namespaces share the file system.
  - Used by the outputguard.egress lab, Molecule scenarios and tests, where namespaces stand in for a
    server, gateways, clients and an "internet".
author: outputguard.egress contributors (@outputguard)
version_added: 0.1.0
options:
  netns_name:
    description:
      - The network namespace to run in, as listed by C(ip netns list).
      - Defaults to the host's C(ansible_host), or its inventory name.
    type: str
    vars:
      - name: ansible_netns_name
      - name: ansible_host
    default: inventory_hostname
  become_success_timeout:
    description:
      - Number of seconds to wait for become to succeed when enabled.
    type: int
    default: 10
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    description:
      - Strip internal become output preceding command execution.
    type: bool
    default: true
    vars:
      - name: ansible_local_become_strip_preamble
extends_documentation_fragment:
  - connection_pipelining
notes:
  - Needs root (or CAP_SYS_ADMIN) on the controller and the C(ip) command from iproute2.
  - The namespace must exist before the play starts; the lab and Molecule's create step make them.
"""

EXAMPLES = r"""
# inventory: namespaces as hosts
# all:
#   hosts:
#     gw1:
#       ansible_connection: outputguard.egress.netns
#       ansible_host: ogl-gw1
"""

import os
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.connection.local import Connection as LocalConnection


class Connection(LocalConnection):
    """Local connection whose commands run inside a named network namespace."""

    transport = "outputguard.egress.netns"
    has_pipelining = True

    def _netns(self):
        name = self.get_option("netns_name")
        if not name or name == "inventory_hostname":
            name = self._play_context.remote_addr
        if not os.path.exists(os.path.join("/run/netns", name)):
            raise AnsibleConnectionFailure(
                "network namespace %r does not exist (see `ip netns list`); create it first, "
                "e.g. with the lab's `scripts/lab up`" % name)
        return name

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Run the command inside the namespace through ip netns exec."""
        wrapped = "exec ip netns exec %s /bin/sh -c %s" % (shlex.quote(self._netns()), shlex.quote(to_text(cmd)))
        return super(Connection, self).exec_command(wrapped, in_data=in_data, sudoable=sudoable)
