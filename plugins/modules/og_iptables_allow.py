#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: og_iptables_allow
short_description: Default-deny egress for client networks on a gateway, with an ipset allowlist
version_added: 0.1.0
description:
  - Puts the outputguard data plane in place on a gateway, or removes it.
  - Forwarding from O(client_networks) out of O(outside_interface) is denied by default and rejected fast
    (TCP reset, ICMP administratively prohibited); destinations in the allowlist pass, and the clients are
    masqueraded on the outside interface.
  - The allowlist lives in ipset hash sets with per-element counters (C(og-allow4), C(og-allowp4) and their
    C(-in) twins); the rules live in the chains C(OG-FORWARD), C(OG-REJECT), C(OG-ACCEPT) (filter) and
    C(OG-POSTROUTING) (nat), reached by one jump each at the top of C(FORWARD) and C(POSTROUTING).
  - Accepted traffic is counted per client address in C(og-perclient4) (what the client sent) and
    C(og-perclient4-in) (the replies), and their IPv6 twins (hash:ip with counters, at most 65536 clients each,
    each forgotten an hour after its first packet; when full, new clients pass uncounted) for the gateway agent.
  - Refused new connections are counted per destination in C(og-denied4) and C(og-denied6) (hash:ip with counters,
    at most 65536 addresses, each forgotten an hour after its first attempt) for the gateway agent's metrics.
  - Only objects named C(og-*) and C(OG-*) are changed. Other rules and the C(FORWARD) policy are left alone, so
    the module works on hosts whose C(FORWARD) policy is C(DROP). The host's own C(INPUT) and C(OUTPUT) are not
    touched.
  - Elements inside internal networks (RFC 1918, loopback, link-local, CGNAT, multicast, reserved) are never
    added; they are returned in RV(refused) with a warning.
options:
  client_networks:
    description:
      - The networks whose egress the gateway controls, in CIDR notation without host bits.
      - Required when O(state=present).
    type: list
    elements: str
  outside_interface:
    description:
      - The interface that leads to the internet. Clients are masqueraded on it.
      - Required when O(state=present).
    type: str
  ipv6:
    description:
      - Also manage IPv6 (ip6tables and sets of family inet6).
      - With O(state=absent), IPv6 objects are removed whenever C(ip6tables) is installed.
    type: bool
    default: false
  allow_dns_over_tls:
    description:
      - Let clients connect to TCP port 853 (DNS over TLS) of allowed or learned destinations.
      - When V(false), the first rule of C(OG-FORWARD) refuses clients' TCP to port 853, so names are resolved
        through the gateway's DNS forwarder (og-dns), which learns their addresses.
    type: bool
    default: false
  mode:
    description:
      - V(enforce) refuses what is not allowed. V(observe) forwards it and records it as "would have been refused"
        in the C(og-observed4)/C(og-observed6) sets, which the gateway agent reports to the server's Blocked page.
      - Switching reloads only the filter chains (C(OG-FORWARD), C(OG-REJECT), C(OG-ACCEPT)); the allowlist stays.
      - The agent follows a mode set on the server (C(PUT /api/v1/gateways/NAME/mode)); it re-applies its own
        within its drift interval when this module applied another.
    type: str
    choices: [enforce, observe]
    default: enforce
  allowed:
    description:
      - Allowed destinations as elements, for example V(198.51.100.10), V(198.51.100.0/24), V(2001:db8::/64),
        V(198.51.100.10/32 443/tcp) or V(203.0.113.0/24 8000-8100/tcp).
      - When omitted, the allowlist is left as it is (the gateway agent usually manages it).
    type: list
    elements: str
  exclusive:
    description:
      - When V(true), the allowlist becomes exactly O(allowed), replaced atomically (temporary sets and
        C(ipset swap)); counters of elements that stay are kept.
      - When V(false), the elements of O(allowed) are ensured present and others are left alone.
    type: bool
    default: false
  state:
    description:
      - V(present) puts sets, chains, rules and jumps in place; V(absent) removes exactly those.
    type: str
    choices: [present, absent]
    default: present
attributes:
  diff_mode:
    description: Shows the owned sets, chains, jumps and allowed elements before and after, sorted.
extends_documentation_fragment:
  - outputguard.egress.og_module
requirements:
  - ipset
  - iptables (and ip6tables when O(ipv6=true))
notes:
  - Enabling IP forwarding (C(net.ipv4.ip_forward)) is not this module's business; use M(ansible.posix.sysctl) or the
    gateway role.
  - Removing an element through the gateway agent also removes members that overlapping port ranges share.
seealso:
  - name: docs/kernel-interface.md
    description: The objects this module owns and the rules in OG-FORWARD.
    link: https://example.invalid/outputguard/egress/docs
"""

EXAMPLES = r"""
- name: Gateway data plane for the lab clients, allowlist managed by the agent
  outputguard.egress.og_iptables_allow:
    client_networks:
      - 10.88.0.0/24
    outside_interface: eth1

- name: Exactly these destinations, replaced atomically
  outputguard.egress.og_iptables_allow:
    client_networks: [10.88.0.0/24]
    outside_interface: eth1
    allowed:
      - 198.51.100.10
      - 198.51.100.20/32 443/tcp
      - 203.0.113.0/24 8000-8100/tcp
    exclusive: true

- name: Remove every outputguard set, chain and jump
  outputguard.egress.og_iptables_allow:
    state: absent
"""

RETURN = r"""
elements:
  description: The allowed elements in the kernel after the task (predicted in check mode; on failure, as read
    before it, empty when it failed before reading them), sorted.
  returned: always
  type: list
  elements: str
  sample: ["198.51.100.10/32", "198.51.100.20/32 443/tcp"]
added:
  description: Allowed elements added by the task (to be added, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["198.51.100.10/32"]
removed:
  description: Allowed elements removed by the task; only O(exclusive=true) removes elements.
  returned: always
  type: list
  elements: str
  sample: ["203.0.113.7/32"]
refused:
  description: Elements of O(allowed) that were not added because they lie inside an internal network or belong
    to IPv6 while O(ipv6=false).
  returned: always
  type: list
  elements: str
  sample: ["10.1.2.3/32"]
diff:
  description: The owned objects and allowed elements before and after, one sorted line each.
  returned: when the task runs with C(--diff)
  type: dict
  contains:
    before:
      description: State before the task.
      type: str
    after:
      description: State after the task (on failure, the state before it).
      type: str
cmd:
  description: The command that failed; V(null) when the failure was not a command's (a bad option value).
  returned: failure
  type: list
  elements: str
rc:
  description: Its return code; V(null) when the failure was not a command's.
  returned: failure
  type: int
stdout:
  description: Its standard output; empty when the failure was not a command's.
  returned: failure
  type: str
stderr:
  description: Its standard error; empty when the failure was not a command's.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.outputguard.egress.plugins.module_utils.og_command import CommandError, CommandRunner
from ansible_collections.outputguard.egress.plugins.module_utils.og_elements import Element
from ansible_collections.outputguard.egress.plugins.module_utils.og_exit import COMMAND_FAILURE_KEYS, ModuleExit
from ansible_collections.outputguard.egress.plugins.module_utils.og_firewall import (
    EgressPolicy, Firewall, lines_text)
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError


# Every exit returns these keys (failure included), plus diff with --diff, plus msg, cmd, rc, stdout, stderr on
# failure. Not "skipped" for refused elements: Ansible would report the whole task as skipped.
RESULT = {"changed": False, "elements": [], "added": [], "removed": [], "refused": []}


def element_lines(elements):
    """Diff lines for allowed elements."""
    return ["allowed %s" % (e,) for e in elements]


def state_text(structure_text, elements):
    """One sorted text of the owned objects and the allowed elements."""
    return lines_text(structure_text.splitlines() + element_lines(elements))


def parse_allowed(values):
    """Elements from the allowed option; raises TargetError naming a bad one."""
    elements = []
    for value in values:
        try:
            elements.append(Element.parse(value))
        except TargetError as exc:
            raise TargetError("allowed: %s; write addresses, networks or '<network> <port>/<proto>' (domain "
                              "names are resolved by the outputguard server, not here)" % exc) from None
    return elements


def present(module, fw, out):
    """Ensure the data plane and the allowlist, recording the result in `out` (a ModuleExit)."""
    params = module.params
    fw.preflight()
    wanted = parse_allowed(params["allowed"]) if params["allowed"] is not None else None
    plan = fw.plan()
    current = fw.elements(expected=wanted)
    kept, refused = fw.accept(wanted or [])
    if wanted is None:
        target = set(current)
    elif params["exclusive"]:
        target = set(kept)
    else:
        target = set(current) | set(kept)
    before = state_text(plan.before, current)
    out.update(elements=sorted_texts(current), refused=[str(e) for e in refused])
    out.diff(before, before)
    for element in refused:
        module.warn("allowed element %s was refused: it lies inside an internal network or is IPv6 while "
                    "ipv6 is false" % (element,))
    after = state_text(plan.after, target)
    if not module.check_mode:
        fw.apply(plan)
        if wanted is not None and params["exclusive"] and set(current) != target:
            fw.replace(sorted(target, key=str))
        elif wanted is not None and target - set(current):
            fw.update(add=sorted(target - set(current), key=str))
        after = state_text(fw.state(), fw.elements(expected=target))
    record(out, before, after, after_elements(after), added=target - set(current), removed=set(current) - target)


def absent(module, fw, out):
    """Remove every owned object, recording the result in `out` (a ModuleExit)."""
    current = fw.elements()
    before = state_text(fw.state(), current)
    out.update(elements=sorted_texts(current))
    out.diff(before, before)
    after = ""
    if not module.check_mode:
        fw.remove()
        after = state_text(fw.state(), fw.elements())
    record(out, before, after, [], removed=current)


def after_elements(text):
    return [line[len("allowed "):] for line in text.splitlines() if line.startswith("allowed ")]


def sorted_texts(elements):
    return sorted(str(e) for e in elements)


def record(out, before, after, elements, added=(), removed=()):
    """The result of a run that got through: changed from the kernel read back, the elements and the diff."""
    out.update(changed=before != after, elements=sorted_texts(elements), added=sorted_texts(added),
               removed=sorted_texts(removed))
    out.diff(before, after)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            client_networks=dict(type="list", elements="str"),
            outside_interface=dict(type="str"),
            ipv6=dict(type="bool", default=False),
            allow_dns_over_tls=dict(type="bool", default=False),
            mode=dict(type="str", choices=["enforce", "observe"], default="enforce"),
            allowed=dict(type="list", elements="str"),
            exclusive=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ("client_networks", "outside_interface"))],
        supports_check_mode=True,
    )
    params = module.params
    out = ModuleExit(module, RESULT, COMMAND_FAILURE_KEYS)
    runner = CommandRunner()
    ipv6 = params["ipv6"]
    if params["state"] == "absent" and runner.which("ip6tables") is not None:
        ipv6 = True  # absent leaves no owned object behind, whichever families were in use
    try:
        fw = Firewall(EgressPolicy(params["client_networks"] or [], params["outside_interface"], ipv6=ipv6,
                                   allow_dns_over_tls=params["allow_dns_over_tls"], mode=params["mode"]), runner)
        if params["state"] == "present":
            present(module, fw, out)
        else:
            absent(module, fw, out)
    except CommandError as exc:
        out.fail_from(exc)
    except TargetError as exc:
        out.fail(str(exc))
    out.exit()


if __name__ == "__main__":
    main()
