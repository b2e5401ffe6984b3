# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway's data plane: the sets, chains and rules outputguard owns (docs/kernel-interface.md).

Allowed destinations live in ipset hash sets with per-element counters, referenced by a few rules in chains
named OG-*; lookups are O(1) whatever the size of the allowlist. Used by the og_iptables_allow module and
by the gateway agent alike.
"""

from __future__ import annotations

import ipaddress
import os

from .og_command import CommandError, CommandRunner, refuse_root_netns
from .og_elements import Element, digest
from .og_netpolicy import DEFAULT_INTERNAL_NETWORKS, AddressPolicy, TargetError, parse_networks

MAXELEM = 1048576
CHAIN = "OG-FORWARD"
REJECT_CHAIN = "OG-REJECT"
NAT_CHAIN = "OG-POSTROUTING"


class FirewallError(CommandError):
    """The data plane cannot be put in place; the message says what is wrong and how to fix it."""


class Counters(object):
    """Traffic through one element: out = client to internet, in = internet to client."""

    __slots__ = ("out_bytes", "out_packets", "in_bytes", "in_packets")

    def __init__(self, out_bytes=0, out_packets=0, in_bytes=0, in_packets=0):
        self.out_bytes = out_bytes
        self.out_packets = out_packets
        self.in_bytes = in_bytes
        self.in_packets = in_packets

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other):
        return isinstance(other, Counters) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return "Counters(%s)" % ", ".join("%s=%d" % kv for kv in self.as_dict().items())


class SetSpec(object):
    """One owned ipset: name, type and family."""

    __slots__ = ("name", "type", "family", "counters")

    def __init__(self, name, type_, family, counters=True):
        self.name = name
        self.type = type_
        self.family = family
        self.counters = counters

    def create_line(self, name=None):
        return "create %s %s family %s maxelem %d%s" % (
            name or self.name, self.type, self.family, MAXELEM, " counters" if self.counters else "")


class Family(object):
    """Names and commands of one address family (4 or 6)."""

    def __init__(self, version):
        self.version = version
        self.iptables = "iptables" if version == 4 else "ip6tables"
        self.restore = "iptables-restore" if version == 4 else "ip6tables-restore"
        fam = "inet" if version == 4 else "inet6"
        self.clients = SetSpec("og-clients%d" % version, "hash:net", fam, counters=False)
        self.allow = SetSpec("og-allow%d" % version, "hash:net", fam)
        self.allow_in = SetSpec("og-allow%d-in" % version, "hash:net", fam)
        self.allowp = SetSpec("og-allowp%d" % version, "hash:net,port", fam)
        self.allowp_in = SetSpec("og-allowp%d-in" % version, "hash:net,port", fam)
        self.reject_with = "icmp-admin-prohibited" if version == 4 else "icmp6-adm-prohibited"

    @property
    def sets(self):
        return [self.clients, self.allow, self.allow_in, self.allowp, self.allowp_in]

    @property
    def element_sets(self):
        return [self.allow, self.allow_in, self.allowp, self.allowp_in]

    def forward_rules(self, out):
        c = self.clients.name
        return [
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst -j ACCEPT" % (CHAIN, out, c, self.allow.name),
            "-A %s -o %s -m set --match-set %s src -m set --match-set %s dst,dst -j ACCEPT" % (CHAIN, out, c, self.allowp.name),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED "
            "-m set --match-set %s src -j ACCEPT" % (CHAIN, out, c, self.allow_in.name),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED "
            "-m set --match-set %s src,src -j ACCEPT" % (CHAIN, out, c, self.allowp_in.name),
            # Flows to an address that aged out of a resolver's grace period stay up.
            "-A %s -o %s -m set --match-set %s src -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % (CHAIN, out, c),
            "-A %s -i %s -m set --match-set %s dst -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % (CHAIN, out, c),
            "-A %s -o %s -m set --match-set %s src -j %s" % (CHAIN, out, c, REJECT_CHAIN),
        ]

    def reject_rules(self):
        return [
            "-A %s -p tcp -j REJECT --reject-with tcp-reset" % REJECT_CHAIN,
            "-A %s -j REJECT --reject-with %s" % (REJECT_CHAIN, self.reject_with),
        ]

    def nat_rules(self, out):
        return ["-A %s -o %s -m set --match-set %s src -j MASQUERADE" % (NAT_CHAIN, out, self.clients.name)]


class EgressPolicy(object):
    """What the gateway enforces: which networks are clients, which interface leads out."""

    def __init__(self, client_networks, outside_interface, ipv6=False, internal_networks=DEFAULT_INTERNAL_NETWORKS):
        self.client_networks = [str(n) for n in parse_networks(client_networks, "client network")]
        self.outside_interface = outside_interface
        self.ipv6 = bool(ipv6)
        self.address_policy = AddressPolicy(internal_networks, min_prefix_v4=0, min_prefix_v6=0)

    @property
    def versions(self):
        return (4, 6) if self.ipv6 else (4,)


def kernel_members(element):
    """The set and the member strings (as `ipset save` prints them) that an element becomes."""
    net = element.network
    host = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    if element.port is None:
        return "allow", [host]
    proto, first, last = element.proto_ports
    return "allowp", ["%s,%s:%d" % (host, proto, port) for port in range(first, last + 1)]


def _member_add(element):
    """The single `add` argument for an element (port ranges are added as a range)."""
    net = element.network
    host = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    if element.port is None:
        return "allow", host
    proto, first, last = element.proto_ports
    return "allowp", "%s,%s:%s" % (host, proto, str(first) if first == last else "%d-%d" % (first, last))


class PolicyPlan(object):
    """What apply() would do: the commands per step and a readable before/after of the owned state."""

    def __init__(self, before, after, steps):
        self.before = before
        self.after = after
        self.steps = steps

    @property
    def changed(self):
        return bool(self.steps)

    @property
    def diff(self):
        return {"before": self.before, "after": self.after}


class Firewall(object):
    """Reads and changes the owned ipsets and iptables chains of one gateway."""

    def __init__(self, policy, runner=None):
        self.policy = policy
        self.run = runner or CommandRunner()
        self.families = [Family(v) for v in policy.versions]

    # ---- reading -------------------------------------------------------------------------------
    def _set_headers(self):
        """{name: (type, header)} of every existing set."""
        out = self.run(["ipset", "list", "-t"]).stdout
        sets, name, type_ = {}, None, None
        for line in out.splitlines():
            if line.startswith("Name: "):
                name = line[6:].strip()
            elif line.startswith("Type: "):
                type_ = line[6:].strip()
            elif line.startswith("Header: ") and name:
                sets[name] = (type_, line[8:].strip())
        return sets

    def _save(self, names):
        """{set name: {member: (packets, bytes)}} from `ipset save` of the named sets that exist."""
        result = {}
        for name in names:
            res = self.run(["ipset", "save", name], check=False)
            if res.rc != 0:
                continue
            members = result.setdefault(name, {})
            for line in res.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "add":
                    packets = bytes_ = 0
                    if "packets" in parts:
                        packets = int(parts[parts.index("packets") + 1])
                    if "bytes" in parts:
                        bytes_ = int(parts[parts.index("bytes") + 1])
                    members[parts[2]] = (packets, bytes_)
        return result

    def _chain_rules(self, fam, table, chain):
        res = self.run([fam.iptables, "-t", table, "-S", chain], check=False)
        if res.rc != 0:
            return None
        return [line for line in res.stdout.splitlines() if line.startswith("-A ")]

    def _jump_position(self, fam, table, parent, chain):
        rules = self._chain_rules(fam, table, parent) or []
        try:
            return rules.index("-A %s -j %s" % (parent, chain)) + 1
        except ValueError:
            return None

    def state_lines(self, fam, headers=None):
        """The owned state of one family as sorted readable lines (for diffs)."""
        headers = self._set_headers() if headers is None else headers
        lines = []
        for spec in [fam.clients]:
            if spec.name in headers:
                members = sorted(self._save([spec.name]).get(spec.name, {}))
                lines.append("ipset %s %s: %s" % (spec.name, headers[spec.name][0], " ".join(members)))
        for spec in fam.element_sets:
            if spec.name in headers:
                lines.append("ipset %s %s" % (spec.name, headers[spec.name][0]))
        for table, parent, chain in (("filter", "FORWARD", CHAIN), ("nat", "POSTROUTING", NAT_CHAIN)):
            pos = self._jump_position(fam, table, parent, chain)
            if pos is not None:
                lines.append("%s %s: jump to %s at position %d" % (fam.iptables, parent, chain, pos))
        for table, chain in (("filter", CHAIN), ("filter", REJECT_CHAIN), ("nat", NAT_CHAIN)):
            rules = self._chain_rules(fam, table, chain)
            if rules is not None:
                lines.extend("%s -t %s %s" % (fam.iptables, table, r) for r in rules)
        return lines

    def desired_lines(self, fam):
        out = self.policy.outside_interface
        clients = sorted(str(n) for n in parse_networks(self.policy.client_networks)
                         if n.version == fam.version)
        clients = [c[:-3] if c.endswith("/32") else c[:-4] if c.endswith("/128") else c for c in clients]
        lines = ["ipset %s %s: %s" % (fam.clients.name, fam.clients.type, " ".join(clients))]
        lines += ["ipset %s %s" % (s.name, s.type) for s in fam.element_sets]
        lines += ["%s FORWARD: jump to %s at position 1" % (fam.iptables, CHAIN),
                  "%s POSTROUTING: jump to %s at position 1" % (fam.iptables, NAT_CHAIN)]
        lines += ["%s -t filter %s" % (fam.iptables, r) for r in fam.forward_rules(out)]
        lines += ["%s -t filter %s" % (fam.iptables, r) for r in fam.reject_rules()]
        lines += ["%s -t nat %s" % (fam.iptables, r) for r in fam.nat_rules(out)]
        return lines

    # ---- checking ------------------------------------------------------------------------------
    def preflight(self):
        """Raise FirewallError naming the problem and the fix before anything changes."""
        for binary in ["ipset"] + [b for f in self.families for b in (f.iptables, f.restore)]:
            if self.run.which(binary) is None:
                raise FirewallError("%s is missing. Is the package %s installed?" % (
                    binary, "ipset" if binary == "ipset" else "iptables"))
        out = self.policy.outside_interface
        if not out or not os.path.exists(os.path.join("/sys/class/net", out)):
            existing = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
            raise FirewallError("outside interface %r does not exist on this host (interfaces: %s); set it to the "
                                "interface that leads to the internet" % (out, ", ".join(existing)))
        if not self.policy.client_networks:
            raise FirewallError("no client networks given: list the networks whose egress this gateway controls")
        for net in self.policy.client_networks:
            if ipaddress.ip_network(net).version == 6 and not self.policy.ipv6:
                raise FirewallError("client network %s is IPv6 but ipv6 is off: enable ipv6 or remove it" % net)
        headers = self._set_headers()
        for fam in self.families:
            for spec in fam.sets:
                if spec.name in headers:
                    type_, header = headers[spec.name]
                    wrong = type_ != spec.type or ("family %s" % spec.family) not in header
                    wrong = wrong or (spec.counters and "counters" not in header.split())
                    if wrong:
                        raise FirewallError(
                            "ipset %s exists as %s (%s) but must be %s family %s%s; it is in the way: "
                            "remove it with `ipset destroy %s` (after removing rules that use it)" % (
                                spec.name, type_, header, spec.type, spec.family,
                                " with counters" if spec.counters else "", spec.name))

    # ---- the policy ------------------------------------------------------------------------------
    def plan(self):
        """Compare the owned objects with the desired ones; return a PolicyPlan."""
        headers = self._set_headers()
        before, after, steps = [], [], []
        for fam in self.families:
            current = self.state_lines(fam, headers)
            desired = self.desired_lines(fam)
            before += current
            after += desired
            if sorted(current) != sorted(desired):
                steps.append(fam)
        return PolicyPlan("\n".join(sorted(before)) + "\n", "\n".join(sorted(after)) + "\n", steps)

    def apply(self, plan=None):
        """Put the policy in place (idempotent); return True if anything changed."""
        plan = plan or self.plan()
        if not plan.changed:
            return False
        refuse_root_netns("iptables and ipsets")
        for fam in plan.steps:
            self._apply_family(fam)
        return True

    def _apply_family(self, fam):
        out = self.policy.outside_interface
        headers = self._set_headers()
        lines = [spec.create_line() for spec in fam.sets if spec.name not in headers]
        # Client networks are replaced through a temporary set and swap, like allowed sets.
        tmp = fam.clients.name + "-t"
        lines += ["create %s %s family %s" % (tmp, fam.clients.type, fam.clients.family),
                  "flush %s" % tmp]
        lines += ["add %s %s" % (tmp, n) for n in self.policy.client_networks
                  if ipaddress.ip_network(n).version == fam.version]
        lines += ["swap %s %s" % (tmp, fam.clients.name), "destroy %s" % tmp]
        self.run(["ipset", "restore", "-exist"], stdin="\n".join(lines) + "\n")
        # Chains are declared and filled in one transaction; declaring a chain flushes it.
        filter_rules = fam.forward_rules(out) + fam.reject_rules()
        self.run([fam.restore, "--noflush"], stdin="*filter\n:%s - [0:0]\n:%s - [0:0]\n%s\nCOMMIT\n" % (
            CHAIN, REJECT_CHAIN, "\n".join(filter_rules)))
        self.run([fam.restore, "--noflush"], stdin="*nat\n:%s - [0:0]\n%s\nCOMMIT\n" % (
            NAT_CHAIN, "\n".join(fam.nat_rules(out))))
        for table, parent, chain in (("filter", "FORWARD", CHAIN), ("nat", "POSTROUTING", NAT_CHAIN)):
            if self._jump_position(fam, table, parent, chain) != 1:
                self._delete_jumps(fam, table, parent, chain)
                self.run([fam.iptables, "-t", table, "-I", parent, "1", "-j", chain])

    def _delete_jumps(self, fam, table, parent, chain):
        while self.run([fam.iptables, "-t", table, "-D", parent, "-j", chain], check=False).rc == 0:
            pass

    def remove(self):
        """Remove exactly the owned jumps, chains and sets; return True if anything was there."""
        headers = self._set_headers()
        changed = False
        for fam in self.families:
            if self.state_lines(fam, headers):
                changed = True
        if not changed:
            return False
        refuse_root_netns("iptables and ipsets")
        for fam in self.families:
            for table, parent, chain in (("filter", "FORWARD", CHAIN), ("nat", "POSTROUTING", NAT_CHAIN)):
                self._delete_jumps(fam, table, parent, chain)
            for table, chain in (("filter", CHAIN), ("filter", REJECT_CHAIN), ("nat", NAT_CHAIN)):
                if self._chain_rules(fam, table, chain) is not None:
                    self.run([fam.iptables, "-t", table, "-F", chain])
            for table, chain in (("filter", CHAIN), ("filter", REJECT_CHAIN), ("nat", NAT_CHAIN)):
                if self._chain_rules(fam, table, chain) is not None:
                    self.run([fam.iptables, "-t", table, "-X", chain])
            for spec in fam.sets:
                if spec.name in headers:
                    self.run(["ipset", "destroy", spec.name])
        return True

    # ---- allowed elements -------------------------------------------------------------------
    def _family(self, version):
        for fam in self.families:
            if fam.version == version:
                return fam
        return None

    def accept(self, elements):
        """Split elements into (kept, skipped): skipped are internal or of a family that is off."""
        kept, skipped = [], []
        for element in elements:
            element = element if isinstance(element, Element) else Element.parse(element)
            if self._family(element.version) is None or self.policy.address_policy.is_internal(element.net):
                skipped.append(element)
            else:
                kept.append(element)
        return kept, skipped

    def members(self):
        """{set name: {member: (packets, bytes)}} of the allowed sets as they are in the kernel."""
        return self._save([s.name for f in self.families for s in f.element_sets])

    def elements(self, expected=None):
        """The allowed elements in the kernel. Port ranges are folded back when they match `expected`."""
        saved = self.members()
        found = set()
        for fam in self.families:
            found |= {Element(m) for m in saved.get(fam.allow.name, {})}
            for member in saved.get(fam.allowp.name, {}):
                host, _, proto_port = member.partition(",")
                proto, _, port = proto_port.partition(":")
                found.add(Element(host, "%s/%s" % (port, proto)))
        if expected is not None:
            expected = set(e if isinstance(e, Element) else Element.parse(e) for e in expected)
            expanded = set()
            for element in expected:
                kind, members = kernel_members(element)
                for member in members:
                    if kind == "allow":
                        expanded.add(Element(member))
                    else:
                        host, _, proto_port = member.partition(",")
                        proto, _, port = proto_port.partition(":")
                        expanded.add(Element(host, "%s/%s" % (port, proto)))
            if expanded == found:
                return expected
        return found

    def replace(self, elements):
        """Make the allowed sets hold exactly `elements`, atomically (temporary sets + swap).

        Counters of elements that stay are carried over. Returns the skipped elements.
        """
        refuse_root_netns("ipsets")
        kept, skipped = self.accept(elements)
        saved = self.members()
        lines = []
        for fam in self.families:
            mine = [e for e in kept if e.version == fam.version]
            for spec, kind in ((fam.allow, "allow"), (fam.allow_in, "allow"),
                               (fam.allowp, "allowp"), (fam.allowp_in, "allowp")):
                tmp = spec.name + "-t"
                lines += [spec.create_line(tmp), "flush %s" % tmp]
                current = saved.get(spec.name, {})
                for element in mine:
                    ekind, members = kernel_members(element)
                    if ekind != kind:
                        continue
                    for member in members:
                        packets, bytes_ = current.get(member, (0, 0))
                        lines.append("add %s %s packets %d bytes %d" % (tmp, member, packets, bytes_))
                lines += ["swap %s %s" % (tmp, spec.name), "destroy %s" % tmp]
        self.run(["ipset", "restore", "-exist"], stdin="\n".join(lines) + "\n")
        return skipped

    def update(self, add=(), remove=()):
        """Add and remove elements in one `ipset restore` batch; returns the skipped elements."""
        refuse_root_netns("ipsets")
        kept, skipped = self.accept(add)
        gone, _ = self.accept(remove)
        lines = []
        for verb, elements in (("del", gone), ("add", kept)):
            for element in elements:
                fam = self._family(element.version)
                kind, member = _member_add(element)
                for spec in ((fam.allow, fam.allow_in) if kind == "allow" else (fam.allowp, fam.allowp_in)):
                    lines.append("%s %s %s" % (verb, spec.name, member))
        if lines:
            self.run(["ipset", "restore", "-exist"], stdin="\n".join(lines) + "\n")
        return skipped

    def counters(self, elements=None):
        """{Element: Counters} read from the kernel now; port ranges are summed per element."""
        saved = self.members()
        result = {}
        elements = self.elements(expected=elements) if elements is not None else self.elements()
        for element in elements:
            fam = self._family(element.version)
            kind, members = kernel_members(element)
            out_set = fam.allow if kind == "allow" else fam.allowp
            in_set = fam.allow_in if kind == "allow" else fam.allowp_in
            c = Counters()
            for member in members:
                p, b = saved.get(out_set.name, {}).get(member, (0, 0))
                c.out_packets += p
                c.out_bytes += b
                p, b = saved.get(in_set.name, {}).get(member, (0, 0))
                c.in_packets += p
                c.in_bytes += b
            result[element] = c
        return result

    def rejected(self):
        """(packets, bytes) rejected for the clients so far, all families together."""
        packets = bytes_ = 0
        for fam in self.families:
            res = self.run([fam.iptables, "-t", "filter", "-L", REJECT_CHAIN, "-v", "-x", "-n"], check=False)
            for line in res.stdout.splitlines()[2:]:
                parts = line.split()
                if len(parts) > 2 and parts[0].isdigit():
                    packets += int(parts[0])
                    bytes_ += int(parts[1])
        return packets, bytes_


def kernel_digest(firewall, expected=None):
    """Digest and count of what is really in the kernel."""
    elements = firewall.elements(expected=expected)
    return digest(elements), len(elements)


__all__ = ["Counters", "EgressPolicy", "Firewall", "FirewallError", "PolicyPlan", "TargetError", "kernel_digest"]
