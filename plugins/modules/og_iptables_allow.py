#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: og_iptables_allow
short_description: Put a gateway's egress policy in place with ipset and iptables
version_added: 0.1.0
description:
  - Ensures the egress policy of an outputguard.egress gateway, as objects it owns and nothing else
    (ipsets C(og-*), chains C(OG-*)), reached by one jump at the top of C(FORWARD) and C(POSTROUTING).
  - Traffic from the client networks out of the outside interface is denied by default and rejected at once
    (TCP reset, ICMP administratively prohibited); allowed destinations and established flows pass; it is
    masqueraded on the outside interface. The host's own traffic (SSH, DNS, the agent) is never touched, and
    it works whatever the policy of C(FORWARD) is.
  - Optionally manages a static list of allowed destinations; usually the gateway agent does that.
author: outputguard.egress contributors
requirements:
  - ipset and iptables (Debian packages ipset and iptables) on the managed host
options:
  client_networks:
    description: Networks of the clients whose egress this gateway controls. Required when O(state=present).
    type: list
    elements: str
    default: []
  outside_interface:
    description: The interface towards the internet. Required when O(state=present).
    type: str
  ipv6:
    description: Enforce the policy for IPv6 too (ip6tables and IPv6 sets).
    type: bool
    default: false
  allowed:
    description:
      - Allowed destinations as elements (C(198.51.100.10), C(198.51.100.0/24), C(198.51.100.10/32 443/tcp)).
      - When omitted, the allowed sets are left to the gateway agent.
    type: list
    elements: str
  exclusive:
    description:
      - With O(allowed), replace the allowed sets atomically so they hold exactly O(allowed);
        otherwise only add what is missing.
    type: bool
    default: false
  state:
    description: C(absent) removes exactly the sets, chains and jumps this module owns.
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
"""

EXAMPLES = r"""
- name: Default deny for the client LAN, masquerade on ens4
  outputguard.egress.og_iptables_allow:
    client_networks: [10.10.0.0/16]
    outside_interface: ens4

- name: A gateway without the agent, with a fixed allowlist
  outputguard.egress.og_iptables_allow:
    client_networks: [10.10.0.0/16]
    outside_interface: ens4
    allowed: [198.51.100.10, "203.0.113.0/24 443/tcp"]
    exclusive: true

- name: Remove everything this module put in place
  outputguard.egress.og_iptables_allow:
    state: absent
"""

RETURN = r"""
policy_changed:
  description: Whether sets, chains or jumps of the policy were created or repaired.
  returned: always
  type: bool
added:
  description: Allowed elements added.
  returned: always
  type: list
  elements: str
  sample: ["198.51.100.10/32"]
removed:
  description: Allowed elements removed (O(exclusive=true) only).
  returned: always
  type: list
  elements: str
skipped:
  description: Elements refused because they lie in an internal network.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.outputguard.egress.plugins.module_utils.og_command import CommandError
from ansible_collections.outputguard.egress.plugins.module_utils.og_elements import Element
from ansible_collections.outputguard.egress.plugins.module_utils.og_firewall import EgressPolicy, Firewall
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            client_networks=dict(type="list", elements="str", default=[]),
            outside_interface=dict(type="str"),
            ipv6=dict(type="bool", default=False),
            allowed=dict(type="list", elements="str"),
            exclusive=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ("client_networks", "outside_interface"))],
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, policy_changed=False, added=[], removed=[], skipped=[])
    try:
        if p["state"] == "absent":
            fw = Firewall(EgressPolicy([], "", ipv6=True))
            before = "\n".join(sorted(line for fam in fw.families for line in fw.state_lines(fam)))
            result["changed"] = result["policy_changed"] = bool(before)
            if module._diff:
                result["diff"] = {"before": before + "\n" if before else "", "after": ""}
            if result["changed"] and not module.check_mode:
                fw.remove()
            module.exit_json(**result)

        allowed = None
        if p["allowed"] is not None:
            allowed = [Element.parse(a if " " in a or "/" in a else a + ("/128" if ":" in a else "/32"))
                       for a in p["allowed"]]
        fw = Firewall(EgressPolicy(p["client_networks"], p["outside_interface"], p["ipv6"]))
        fw.preflight()
        plan = fw.plan()
        diff = plan.diff
        result["policy_changed"] = plan.changed
        add = remove = []
        if allowed is not None:
            kept, skipped = fw.accept(allowed)
            result["skipped"] = sorted(str(e) for e in skipped)
            current = fw.elements(expected=kept) if not plan.changed or plan.before.strip() else set()
            add = sorted(set(kept) - set(current))
            remove = sorted(set(current) - set(kept)) if p["exclusive"] else []
            result["added"] = [str(e) for e in add]
            result["removed"] = [str(e) for e in remove]
            diff = {"before": diff["before"] + "".join("allow %s\n" % e for e in sorted(current)),
                    "after": diff["after"] + "".join("allow %s\n" % e for e in sorted(set(current) - set(remove) | set(add)))}
        result["changed"] = bool(plan.changed or add or remove)
        if module._diff:
            result["diff"] = diff
        if result["changed"] and not module.check_mode:
            fw.apply(plan)
            if allowed is not None and p["exclusive"] and (add or remove):
                fw.replace(kept)
            elif add or remove:
                fw.update(add=add, remove=remove)
    except CommandError as exc:
        module.fail_json(**dict(result, **exc.as_dict()))
    except TargetError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
