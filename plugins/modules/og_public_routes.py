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
  - Networks in O(exclude), and the address Ansible connects from, keep their current route.
author: outputguard.egress contributors
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
      - Networks that keep their current route (management networks, VPN endpoints).
    type: list
    elements: str
    default: []
  ipv6:
    description: Route the public IPv6 ranges as well (to the IPv6 gateways in O(gateways)).
    type: bool
    default: false
  state:
    description: C(absent) removes exactly the routes this module installed.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
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
routes:
  description: Number of routes of this module after the run.
  returned: always
  type: int
  sample: 73
"""

import ipaddress
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import (
    DEFAULT_INTERNAL_NETWORKS, TargetError)
from ansible_collections.outputguard.egress.plugins.module_utils.og_routes import (
    RouteError, RouteTable, desired_routes, plan, route_line)


def management_networks():
    """The address Ansible connects from keeps its route (SSH_CONNECTION's first field)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if not parts:
        return []
    try:
        address = ipaddress.ip_address(parts[0])
    except ValueError:
        return []
    return [str(ipaddress.ip_network(address))]


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
    result = dict(changed=False, added=[], changed_routes=[], removed=[], routes=0)
    for gw in p["gateways"]:
        try:
            ipaddress.ip_address(gw)
        except ValueError:
            module.fail_json(msg="gateway %r is not an IP address" % gw, **result)
    table = None
    try:
        table = RouteTable()
        current = table.own_routes()
        if p["state"] == "present":
            table.check_gateways(p["gateways"])
            desired = desired_routes(p["gateways"], p["mode"], internal, p["exclude"] + management_networks(), p["ipv6"])
        else:
            desired = {}
        add, change, remove, diff = plan(current, desired)
        result.update(
            changed=bool(add or change or remove),
            added=[route_line(k, desired[k]) for k in add],
            changed_routes=[route_line(k, desired[k]) for k in change],
            removed=[route_line(k, current[k]) for k in remove],
            routes=len(desired),
        )
        if module._diff:
            result["diff"] = diff
        if result["changed"] and not module.check_mode:
            table.apply(add, change, remove, desired, current)
    except (RouteError, TargetError) as exc:
        module.fail_json(msg=str(exc), **result)
    finally:
        if table is not None:
            table.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
