#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: og_public_routes
short_description: Route every public address range to the egress gateways
version_added: 0.1.0
description:
  - Computes the public address ranges as the exact complement of the internal networks, as the minimal
    list of prefixes, and routes them to one or more gateways through netlink (pyroute2).
  - Its routes carry their own protocol number (191), so it only ever changes its own; the default route and
    every foreign route stay as they are.
  - Never cuts the management path. The networks in O(exclude) and the address Ansible connects from (the
    first field of E(SSH_CONNECTION)) are carved out of the prefixes, so the routes the host has without this
    module keep carrying them. When the address Ansible connects from is carried by one of this module's routes
    right now, a host route keeps that path (also with O(state=absent), with a warning).
  - Every gateway must be another host on a directly connected network; otherwise the module fails before
    anything changes, naming the gateway.
  - Changes are made before removals (new paths exist before old ones go); on a kernel error the changes
    already made are undone.
requirements:
  - pyroute2 on the managed host (Debian package python3-pyroute2)
options:
  gateways:
    description:
      - Gateway addresses, each on a directly connected network. In C(failover) mode the first is primary.
      - Required when O(state=present).
    type: list
    elements: str
    default: []
  mode:
    description:
      - C(failover) installs one route per gateway with rising metrics (primary and standby);
        C(ecmp) installs one multipath route across all gateways.
    type: str
    choices: [failover, ecmp]
    default: failover
  internal_networks:
    description:
      - Networks that are not public; the default is the same built-in list the server refuses.
    type: list
    elements: str
  exclude:
    description:
      - Networks this module never routes, so they keep the route the host has without it (management
        networks, VPN endpoints).
    type: list
    elements: str
    default: []
  ipv6:
    description: Route the public IPv6 ranges as well (to the IPv6 gateways in O(gateways)).
    type: bool
    default: false
  state:
    description:
      - C(absent) removes exactly the routes this module installed (protocol 191), except a host route that
        carries the connection Ansible uses.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Plans the change from the kernel's real routes and changes nothing.
  diff_mode:
    description: Shows this module's routes before and after, sorted.
  platform:
    description: Linux hosts with netlink routing; runs inside the client's network namespace.
extends_documentation_fragment:
  - outputguard.egress.og_module
notes:
  - Run it in the client's network namespace; it refuses the root namespace when the environment variable
    E(OG_REFUSE_ROOT_NETNS=1) is set (the project's tests and lab set it).
"""

EXAMPLES = r"""
- name: Send the public ranges to the primary gateway, the second one as standby
  outputguard.egress.og_public_routes:
    gateways: [10.10.0.1, 10.10.0.2]
    mode: failover
    exclude: [203.0.113.0/28]

- name: Remove the routes again
  outputguard.egress.og_public_routes:
    state: absent
"""

RETURN = r"""
added:
  description: Routes added, as C(prefix via gateway metric N).
  returned: always
  type: list
  elements: str
  sample: ["1.0.0.0/8 via 10.10.0.1 metric 100"]
changed_routes:
  description: Routes whose gateways changed.
  returned: always
  type: list
  elements: str
removed:
  description: Routes removed.
  returned: always
  type: list
  elements: str
management:
  description:
    - The address Ansible connects from (first field of E(SSH_CONNECTION)) and what keeps its path, empty when
      the variable is not set. C(carved) means no route of this module covers it; C(pinned) means its current
      path is one of this module's routes, so a host route keeps that path.
  returned: always
  type: list
  elements: str
  sample: ["203.0.113.50 carved"]
routes:
  description: Number of routes of this module after the run (planned, in check mode; 0 when the task failed).
  returned: always
  type: int
  sample: 73
diff:
  description: This module's routes before and after the task, one sorted line each.
  returned: when the task runs with C(--diff)
  type: dict
  contains:
    before:
      description: The routes before the task.
      type: str
    after:
      description: The routes after the task (on failure, the routes before it).
      type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.outputguard.egress.plugins.module_utils.og_command import CommandError
from ansible_collections.outputguard.egress.plugins.module_utils.og_exit import ModuleExit
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import (
    DEFAULT_INTERNAL_NETWORKS, TargetError, parse_networks)
from ansible_collections.outputguard.egress.plugins.module_utils.og_routes import (
    RouteTable, check_gateway_list, desired_routes, host_prefix, management_pins, plan, route_line)

# Every exit returns these keys (failure included), plus diff with --diff, plus msg on failure.
RESULT = {"changed": False, "added": [], "changed_routes": [], "removed": [], "management": [], "routes": 0}


def management_addresses(environ=None):
    """The address Ansible connects from (SSH_CONNECTION's first field), as a list of zero or one."""
    parts = (os.environ if environ is None else environ).get("SSH_CONNECTION", "").split()
    if not parts:
        return []
    try:
        return [host_prefix(parts[0]).split("/", maxsplit=1)[0]]
    except ValueError:
        return []


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gateways=dict(type="list", elements="str", default=[]),
            mode=dict(type="str", choices=["failover", "ecmp"], default="failover"),
            internal_networks=dict(type="list", elements="str"),
            exclude=dict(type="list", elements="str", default=[]),
            ipv6=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ("gateways",))],
        supports_check_mode=True,
    )
    p = module.params
    internal = p["internal_networks"] if p["internal_networks"] is not None else list(DEFAULT_INTERNAL_NETWORKS)
    management = management_addresses()
    out = ModuleExit(module, RESULT, {})
    table = None
    try:
        parse_networks(internal, "internal network")
        parse_networks(p["exclude"], "exclude network")
        if p["state"] == "present":
            check_gateway_list(p["gateways"], p["mode"], p["ipv6"])
        table = RouteTable()
        if p["state"] == "present":
            table.check_gateways(p["gateways"])
        current = table.own_routes()
        # The management path: its address is carved out, and keeps a host route if its path is ours now.
        pins = management_pins(management, table.lookup)
        if p["state"] == "present":
            holes = list(p["exclude"]) + [host_prefix(a) for a in management]
            desired = desired_routes(p["gateways"], p["mode"], internal, holes, p["ipv6"])
        else:
            desired = {}
        desired.update(pins)
        pinned = set(prefix for prefix, dummy in pins)
        out.update(management=["%s %s" % (a, "pinned" if host_prefix(a) in pinned else "carved") for a in management])
        for key in sorted(pins):
            if p["state"] == "absent":
                module.warn("kept the route %s: it carries the connection Ansible uses (SSH_CONNECTION); run "
                            "state=absent from another address to remove it" % route_line(key, pins[key]))
        add, change, remove, diff = plan(current, desired)
        out.diff(diff["before"], diff["before"])
        if not module.check_mode and (add or change or remove):
            table.apply(add, change, remove, desired, current)  # undoes what it did on an error
        out.update(
            changed=bool(add or change or remove),
            added=[route_line(k, desired[k]) for k in add],
            changed_routes=[route_line(k, desired[k]) for k in change],
            removed=[route_line(k, current[k]) for k in remove],
            routes=len(desired),
        )
        out.diff(diff["before"], diff["after"])
    except CommandError as exc:  # RouteError, and the root-namespace guard's refusal
        out.fail_from(exc)
    except TargetError as exc:
        out.fail(str(exc))
    finally:
        if table is not None:
            table.close()
    out.exit()


if __name__ == "__main__":
    main()
