#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: og_entry
short_description: Manage one outputguard allowlist entry through the server's REST API
version_added: 0.1.0
description:
  - Ensures that an allowlist entry exists (O(state=present)) or does not (O(state=absent)) on an outputguard
    server, through its REST API under C(/api/v1). Runs wherever the server is reachable, usually C(localhost).
  - An entry is identified by its O(target) and O(ports), compared in the server's normal form
    (V(Partner.Example.COM.) is V(partner.example.com), V(198.51.100.10/32) is V(198.51.100.10), ports are sorted
    and lower-cased).
  - When the entry exists but differs in O(comment), O(expires_at) or O(deletable), the module changes it in place
    (C(PATCH /api/v1/entries/{id}) with C(If-Match), so a change someone made since the module read the entry fails
    the task instead of being overwritten). The entry keeps its id and creator, and no connection is refused (a
    comment or expiry change does not touch what the gateways enforce).
  - To change the ports of an existing entry in place, give its current ports in O(match_ports) and the wanted ones
    in O(ports); for a widening such as V([80/tcp]) to V([80/tcp, 8443/tcp]) the gateways add the new elements and
    keep the old, so open and new connections continue.
  - Options that are not given are not compared; a new entry then gets the server's defaults (deletable, no
    expiry, no comment).
options:
  target:
    description:
      - An IPv4 or IPv6 address, a network in CIDR notation (without host bits), a domain name, or a wildcard
        domain such as V(*.partner.example.com).
      - A wildcard matches one or more labels before the name (V(api.partner.example.com),
        V(a.b.partner.example.com)), never the name itself; add V(partner.example.com) as an entry of its own.
        The star must be the whole first label, followed by a name of at least two labels (V(*), V(*.com),
        V(a.*.example.com), V(*x.example.com) and V(**.example.com) are refused). A wildcard is enforced by the
        gateways' DNS forwarder only; the server's central resolver does not resolve it.
      - The server refuses internal targets (RFC 1918, loopback, ...) and too broad networks; its message is
        returned as the module's failure.
    type: str
    required: true
  ports:
    description:
      - Port specs such as V(443/tcp), V(53/udp) or V(8000-8100/tcp).
      - An empty list (the default) allows every port. Ports are part of the entry's identity; the same target
        with other ports is another entry, unless O(match_ports) names the ports of the entry to change.
    type: list
    elements: str
    default: []
  deletable:
    description:
      - Whether the entry may be deleted. An undeletable entry leaves only when it expires.
      - Compared only when given; a new entry is deletable when omitted.
    type: bool
  expires_at:
    description:
      - When the server deletes the entry, as ISO 8601 (V(2026-12-31T18:00:00Z)); a time without a zone is UTC.
      - An empty string means no expiry. Compared only when given.
    type: str
  comment:
    description:
      - Free text shown in the UI and the audit log, at most 2000 characters. Compared only when given.
    type: str
  match_ports:
    description:
      - The ports of an existing entry of O(target) to change into O(ports) in place (same id, no gap for
        connections). Used only when no entry with O(target) and O(ports) exists yet, so a second run finds the
        changed entry and changes nothing; when neither exists, the entry is created with O(ports).
      - With O(state=absent) it is not used.
    type: list
    elements: str
    version_added: 0.2.0
  replace:
    description:
      - Has no effect since the server changes entries in place (C(PATCH)); a differing entry is always changed
        in place, never deleted and created again. Kept so that existing tasks still run.
    type: bool
    default: false
  state:
    description:
      - V(present) ensures the entry exists; V(absent) deletes it.
      - Deleting an undeletable entry fails before any request that changes something.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Reads the server's entries and reports what would change; sends no change.
  diff_mode:
    description: Shows the entry's id, target, ports, deletable, expires_at and comment before and after.
extends_documentation_fragment:
  - outputguard.egress.og_module
  - outputguard.egress.og_api
notes:
  - O(token) needs the editor or admin role (C(og-server token create --role editor)).
  - In check mode only the syntax of O(target), O(ports) and O(expires_at) is checked; whether the server
    accepts the target (internal networks, minimum prefix) shows when the task runs.
  - A creation, a deletion and a change of ports get a revision on the server; a change of the comment, expiry or
    deletability does not (the gateways' sets do not change). RV(entry.revision) is the revision of the creation or
    change (V(null) when the change made none). M(outputguard.egress.og_entry_info) returns the current one.
  - Making an entry undeletable needs the admin role; an undeletable entry never becomes deletable again (the
    module fails before any request that changes something), and only an admin may change its ports or expiry.
seealso:
  - module: outputguard.egress.og_entry_info
  - name: docs/entries-as-code.md
    description: Managing the allowlist from Git with playbooks/entries.yml.
    link: https://example.invalid/outputguard/egress/docs
"""

EXAMPLES = r"""
- name: The partner API, HTTPS only
  outputguard.egress.og_entry:
    server_url: https://og.example.com
    token: "{{ og_api_token }}"
    target: api.partner.example.com
    ports: [443/tcp]
    comment: partner API (ticket 4711)

- name: Every name under the CDN's zone, learned through the gateways' DNS forwarder (the zone itself not)
  outputguard.egress.og_entry:
    target: "*.cdn.partner.example.com"
    ports: [443/tcp]
    comment: partner CDN

- name: A temporary vendor network, token and URL from OG_TOKEN and OG_SERVER_URL
  outputguard.egress.og_entry:
    target: 203.0.113.0/24
    expires_at: "2026-12-31T18:00:00Z"
    comment: migration window

- name: Change the comment of an existing entry (in place)
  outputguard.egress.og_entry:
    target: api.partner.example.com
    ports: [443/tcp]
    comment: partner API (ticket 4712)
- name: Widen an entry from HTTPS to HTTPS and 8443 in place (open connections continue)
  outputguard.egress.og_entry:
    target: api.partner.example.com
    match_ports: [443/tcp]
    ports: [443/tcp, 8443/tcp]

- name: Remove an entry
  outputguard.egress.og_entry:
    target: 198.51.100.10
    state: absent
"""

RETURN = r"""
entry:
  description:
    - The entry after the task, as the server returns it; V(null) after O(state=absent).
    - In check mode, a new entry is predicted from the options, with C(id) V(null); a changed one is the entry
      with the wanted values.
  returned: always
  type: dict
  sample:
    id: 12
    target: api.partner.example.com
    kind: domain
    wildcard: false
    ports: [443/tcp]
    deletable: true
    expires_at: null
    comment: partner API (ticket 4711)
    created_by: gitops
    created_at: "2026-11-23T10:00:00Z"
    addresses: []
    revision: 57
  contains:
    revision:
      description:
        - The revision of the server's change log that the creation or change got; V(null) for a change that did
          not alter what the gateways enforce (comment, expiry, deletability).
        - Only in the server's answer to a creation or change; an entry that was read from the server has none.
      returned: when the task created or changed the entry (not in check mode)
      type: int
      sample: 57
diff:
  description: The entry before and after the task, one sorted line per field (name, colon, value as JSON);
    empty when absent.
  returned: when the task runs with C(--diff)
  type: dict
  contains:
    before:
      description: The entry before the task.
      type: str
    after:
      description: The entry after the task.
      type: str
status:
  description: The HTTP status of the failed request (V(-1) when the server did not answer).
  returned: failure
  type: int
code:
  description: The server's error code, such as V(invalid_target), V(unauthorized) or V(undeletable), or the
    module's own (V(invalid_input), V(undeletable)) when it refused before any request; V(null) when the server
    gave none. V(precondition_failed) means someone changed the entry between the module's read and its change.
  returned: failure
  type: str
url:
  description: The URL of the failed request; V(null) when the failure came before any request.
  returned: failure
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.outputguard.egress.plugins.module_utils.og_api import (
    CONNECTION_ARGS, ApiError, Client, normalise_expiry, normalise_ports, parse_target)
from ansible_collections.outputguard.egress.plugins.module_utils.og_exit import API_FAILURE_KEYS, ModuleExit
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError

# Every exit returns these keys (failure included), plus diff with --diff, plus msg, status, code, url on failure.
RESULT = {'changed': False, 'entry': None}

# The fields an operator sets, in the order of the diff (sorted).
SHOWN = ('comment', 'deletable', 'expires_at', 'id', 'ports', 'target')
COMPARED = ('comment', 'deletable', 'expires_at')
# What a change in place may send (the ports only with match_ports).
PATCHED = COMPARED + ('ports',)


def describe(entry):
    """'entry 12 (198.51.100.10, 443/tcp)' for messages."""
    ports = ', '.join(entry.get('ports') or [])
    return 'entry %s (%s%s)' % (entry.get('id'), entry['target'], ', ' + ports if ports else '')


def diff_text(entry):
    """One sorted 'field: value' line per shown field, values as JSON; '' for no entry."""
    if entry is None:
        return ''
    return ''.join('%s: %s\n' % (field, json.dumps(entry.get(field))) for field in SHOWN)


def wanted_fields(params):
    """The normalised wanted values of the options that were given; raises TargetError or ValueError."""
    target = parse_target(params['target'])
    wanted = {'target': target.value, 'kind': target.kind, 'wildcard': target.wildcard,
              'ports': normalise_ports(params['ports'])}
    if params['deletable'] is not None:
        wanted['deletable'] = params['deletable']
    if params['expires_at'] is not None:
        wanted['expires_at'] = normalise_expiry(params['expires_at'])
    if params['comment'] is not None:
        wanted['comment'] = params['comment']
    return wanted


def differences(existing, wanted):
    """[(field, existing value, wanted value)] for the compared fields that were given and differ."""
    return [(f, existing.get(f), wanted[f]) for f in COMPARED if f in wanted and existing.get(f) != wanted[f]]


def request_body(params):
    """The POST body: the options as given (the server normalises them)."""
    body = {'target': params['target'], 'ports': list(params['ports'])}
    for field in COMPARED:
        if params[field] is not None:
            body[field] = params[field]
    if not body.get('expires_at'):
        body.pop('expires_at', None)
    return body


def predicted(wanted, keep=None):
    """The entry after the task, for check mode: a new one (id unknown), or `keep` with the wanted values."""
    if keep is not None:
        entry = dict(keep)
        entry.update((f, wanted[f]) for f in PATCHED if f in wanted)
        return entry
    entry = {'id': None, 'target': wanted['target'], 'kind': wanted['kind'], 'wildcard': wanted['wildcard'],
             'ports': wanted['ports'], 'deletable': True, 'expires_at': None, 'comment': ''}
    entry.update((f, wanted[f]) for f in COMPARED if f in wanted)
    return entry


def find(client, params, wanted):
    """(the entry the task is about or None, whether its ports are to change): the entry of target and ports,
    else (state present, match_ports given) the entry of target and match_ports."""
    existing = client.find_entry(wanted['target'], wanted['ports'])
    if existing is not None or params['state'] != 'present' or params['match_ports'] is None:
        return existing, False
    old = normalise_ports(params['match_ports'])
    if old == wanted['ports']:
        return None, False
    existing = client.find_entry(wanted['target'], old)
    return existing, existing is not None


def run(module, client, out):
    """Plan and apply, recording the result in `out` (a ModuleExit); fails through it. Raises ApiError."""
    params = module.params
    try:
        wanted = wanted_fields(params)
    except (TargetError, ValueError) as exc:
        if params['state'] == 'present' and not module.check_mode:
            # The server has the last word on what a valid entry is: send it as given and report its answer.
            entry = client.create_entry(request_body(params))
            return record(out, True, entry, '')
        out.fail('%s. Nothing was changed' % exc, status=-1, code='invalid_input')
    try:
        if params['match_ports'] is not None:
            normalise_ports(params['match_ports'])
    except TargetError as exc:
        out.fail('match_ports: %s. Nothing was changed' % exc, status=-1, code='invalid_input')
    existing, moving = find(client, params, wanted)
    before = diff_text(existing)
    out.update(entry=existing)
    out.diff(before, before)
    if params['state'] == 'absent':
        if existing is None:
            return record(out, False, None, '')
        if not existing['deletable']:
            out.fail(
                "%s is undeletable: it was created with deletable=false and the server refuses to delete it%s. "
                "Nothing was changed; remove the task, or wait for the entry to expire"
                % (describe(existing), " before it expires at %s" % existing['expires_at']
                   if existing.get('expires_at') else ""),
                status=403, code='undeletable', url=client.base + '/entries/%d' % existing['id'])
        if not module.check_mode:
            client.delete_entry(existing['id'])
        return record(out, True, None, before)
    if existing is None:
        entry = predicted(wanted) if module.check_mode else client.create_entry(request_body(params))
        return record(out, True, entry, '')
    changes = differences(existing, wanted) + ([('ports', existing['ports'], wanted['ports'])] if moving else [])
    if not changes:
        return record(out, False, existing, before)
    etag = None
    if not module.check_mode:
        # Plan the change on a read that carries the ETag and send it with If-Match: a change someone made since
        # fails the task (412 precondition_failed) instead of being overwritten.
        fresh, etag = client.read_entry(existing['id'])
        fresh.pop('elements', None)
        existing = fresh
        changes = differences(existing, wanted) + ([('ports', existing['ports'], wanted['ports'])] if moving
                                                   else [])
        if not changes:
            return record(out, False, existing, before)
    if not existing['deletable'] and wanted.get('deletable'):
        out.fail("%s is undeletable and never becomes deletable again (the server refuses it). Nothing was "
                 "changed; make the task's deletable false, or drop it" % describe(existing),
                 status=-1, code='undeletable', url=client.base + '/entries/%d' % existing['id'])
    if module.check_mode:
        entry = predicted(dict((f, want) for f, have, want in changes), keep=existing)
    else:
        entry = client.update_entry(existing['id'], dict((f, want) for f, have, want in changes), etag)
    return record(out, True, entry, before)


def record(out, changed, entry, before):
    """The result of a run that got through: changed, the entry after the task and the diff."""
    out.update(changed=changed, entry=entry)
    out.diff(before, diff_text(entry))


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        target=dict(type='str', required=True),
        ports=dict(type='list', elements='str', default=[]),
        deletable=dict(type='bool'),
        expires_at=dict(type='str'),
        comment=dict(type='str'),
        match_ports=dict(type='list', elements='str'),
        replace=dict(type='bool', default=False),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    out = ModuleExit(module, RESULT, API_FAILURE_KEYS)
    try:
        client = Client.from_params(module.params)
        run(module, client, out)
    except ApiError as exc:
        out.fail('%s (target %r, ports %r). Nothing was changed'
                 % (exc.msg, module.params['target'], module.params['ports']),
                 status=exc.status, code=exc.code, url=exc.url)
    out.exit()


if __name__ == '__main__':
    main()
