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
  - The API has no way to change an entry in place (no C(PATCH) or C(PUT)). When the entry exists but differs in
    O(comment), O(expires_at) or O(deletable), the module fails and names the differences, unless
    O(replace=true), in which case it deletes the entry and creates it again with the wanted values. The result is a
    new entry (its id may differ; its creator is the token's name), and between the two revisions (usually
    milliseconds) new connections to the target are refused; established ones continue.
  - Options that are not given are not compared; a new entry then gets the server's defaults (deletable, no
    expiry, no comment), and a replaced entry keeps its values.
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
        with other ports is another entry.
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
  replace:
    description:
      - When the entry exists with another O(comment), O(expires_at) or O(deletable), delete it and create it
        again with the wanted values (a new entry; a short gap for new connections).
      - When V(false), such a difference fails the task and names it.
      - An undeletable entry is never replaced.
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
  - Every accepted change gets a revision on the server; RV(entry.revision) is the revision of a creation.
    M(outputguard.egress.og_entry_info) returns the current one.
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

- name: Change the comment of an existing entry (deleted and created again)
  outputguard.egress.og_entry:
    target: api.partner.example.com
    ports: [443/tcp]
    comment: partner API (ticket 4712)
    replace: true

- name: Remove an entry
  outputguard.egress.og_entry:
    target: 198.51.100.10
    state: absent
"""

RETURN = r"""
entry:
  description:
    - The entry after the task, as the server returns it; V(null) after O(state=absent).
    - In check mode, a new or replaced entry is predicted from the options, with C(id) V(null).
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
        - The revision of the server's change log that the creation got.
        - Only in the server's answer to a creation; an entry that was read from the server has no revision.
      returned: when the task created or replaced the entry (not in check mode)
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
    module's own (V(invalid_input), V(differs), V(undeletable)) when it refused before any request; V(null) when
    the server gave none.
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


def request_body(params, keep=None):
    """The POST body: the options as given (the server normalises them), completed from `keep` when replacing."""
    body = {'target': params['target'], 'ports': list(params['ports'])}
    if keep is not None:
        for field in COMPARED:
            body[field] = keep.get(field)
        if keep.get('grace_seconds') is not None:
            body['grace_seconds'] = keep['grace_seconds']
    for field in COMPARED:
        if params[field] is not None:
            body[field] = params[field]
    if not body.get('expires_at'):
        body.pop('expires_at', None)
    return body


def predicted(wanted, keep=None):
    """The entry a creation would make, for check mode (id unknown)."""
    entry = {'id': None, 'target': wanted['target'], 'kind': wanted['kind'], 'wildcard': wanted['wildcard'],
             'ports': wanted['ports'],
             'deletable': True, 'expires_at': None, 'comment': ''}
    if keep is not None:
        entry.update((f, keep.get(f)) for f in COMPARED)
    entry.update((f, wanted[f]) for f in COMPARED if f in wanted)
    return entry


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

    existing = client.find_entry(wanted['target'], wanted['ports'])
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

    changes = differences(existing, wanted)
    if not changes:
        return record(out, False, existing, before)
    listed = '; '.join('%s is %s, the task wants %s' % (f, json.dumps(have), json.dumps(want))
                       for f, have, want in changes)
    if not existing['deletable']:
        out.fail("%s differs (%s) but is undeletable, so it cannot be replaced: the API has no way to change an "
                 "entry in place. Nothing was changed; make the task match the entry" % (describe(existing), listed),
                 status=-1, code='undeletable')
    if not params['replace']:
        out.fail("%s differs: %s. The API cannot change an entry in place; set replace=true to delete it and "
                 "create it again, or make the task match the entry. Nothing was changed"
                 % (describe(existing), listed), status=-1, code='differs')
    if module.check_mode:
        entry = predicted(wanted, keep=existing)
    else:
        entry = replace(client, out, existing, request_body(params, keep=existing))
    return record(out, True, entry, before)


def record(out, changed, entry, before):
    """The result of a run that got through: changed, the entry after the task and the diff."""
    out.update(changed=changed, entry=entry)
    out.diff(before, diff_text(entry))


def replace(client, out, existing, body):
    """Delete `existing` and create `body`; if the creation fails, put the old entry back and fail."""
    client.delete_entry(existing['id'])
    try:
        return client.create_entry(body)
    except ApiError as exc:
        restore = request_body(dict((f, None) for f in COMPARED), keep=existing)
        restore.update(target=existing['target'], ports=existing['ports'])
        try:
            back = client.create_entry(restore)
            outcome = 'the old entry was created again as entry %d' % back['id']
        except ApiError as again:
            back = None
            outcome = 'creating the old entry again failed too (%s); it is gone' % again.msg
        # The server's entries did change: the old one is gone, and maybe back under a new id.
        out.update(entry=back)
        out.diff(diff_text(existing), diff_text(back))
        out.fail('replacing %s: it was deleted, but creating the new one failed: %s; %s'
                 % (describe(existing), exc.msg, outcome), changed=True, status=exc.status, code=exc.code,
                 url=exc.url)


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        target=dict(type='str', required=True),
        ports=dict(type='list', elements='str', default=[]),
        deletable=dict(type='bool'),
        expires_at=dict(type='str'),
        comment=dict(type='str'),
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
