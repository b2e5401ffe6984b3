#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: og_entry_info
short_description: List outputguard allowlist entries through the server's REST API
version_added: 0.1.0
description:
  - Returns the allowlist entries of an outputguard server that match the API's filters (C(GET /api/v1/entries),
    every page), newest first, and the server's current revision.
  - With O(target) (and O(ports)), returns the one entry with exactly that target in the server's normal form, if
    it exists.
options:
  id:
    description:
      - Only the entry with this id (an empty list when there is none).
      - Mutually exclusive with the other filters.
    type: int
  target:
    description:
      - Only the entry or entries with exactly this target, compared in the server's normal form
        (V(Partner.Example.COM.) finds V(partner.example.com)).
      - A wildcard target (V(*.example.com)) finds the wildcard entry only, not the entries of the names it
        covers; the API's C(/addresses/{name}) tells which entries cover a name.
    type: str
  ports:
    description:
      - With O(target), only the entry with exactly these ports; V([]) is the entry for every port.
    type: list
    elements: str
  q:
    description:
      - Text contained in the target or the comment (the API's C(q) filter, case-insensitive).
    type: str
  kind:
    description:
      - Only entries of this kind.
    type: str
    choices: [ip, cidr, domain]
  creator:
    description:
      - Only entries created by this token name (the API's C(creator) filter).
    type: str
  deletable:
    description:
      - Only deletable (V(true)) or undeletable (V(false)) entries.
    type: bool
  expiring:
    description:
      - Only entries with (V(true)) or without (V(false)) an expiry time.
    type: bool
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff; it changes nothing.
extends_documentation_fragment:
  - outputguard.egress.og_module
  - outputguard.egress.og_api
notes:
  - O(token) may have any role (viewer, editor or admin).
  - The pages are read one after the other; entries created or deleted meanwhile may be missed or listed twice.
    RV(revision) is the revision when the first page was read.
seealso:
  - module: outputguard.egress.og_entry
"""

EXAMPLES = r"""
- name: Every undeletable entry
  outputguard.egress.og_entry_info:
    server_url: https://og.example.com
    token: "{{ og_api_token }}"
    deletable: false
  register: pinned

- name: Is the partner API allowed on 443/tcp?
  outputguard.egress.og_entry_info:
    target: API.Partner.Example.com
    ports: [443/tcp]
  register: partner

- name: Domain entries that the GitOps token created
  outputguard.egress.og_entry_info:
    kind: domain
    creator: gitops
"""

RETURN = r"""
entries:
  description: The matching entries as the server returns them, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 12
      target: api.partner.example.com
      kind: domain
      wildcard: false
      ports: [443/tcp]
      deletable: true
      expires_at: null
      comment: partner API
      created_by: gitops
      created_at: "2026-11-23T10:00:00Z"
      addresses:
        - address: 198.51.100.10/32
          source: resolved
          published: true
revision:
  description: The server's current revision (head of its change log); V(null) when the task failed.
  returned: always
  type: int
  sample: 57
status:
  description: The HTTP status of the failed request (V(-1) when the server did not answer or no request was made).
  returned: failure
  type: int
code:
  description: The server's error code, such as V(unauthorized), or V(invalid_input) when the module refused
    before any request; V(null) when the server gave none.
  returned: failure
  type: str
url:
  description: The URL of the failed request; V(null) when the failure came before any request.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.outputguard.egress.plugins.module_utils.og_api import (
    CONNECTION_ARGS, ApiError, Client, entry_key, normalise_ports, parse_target)
from ansible_collections.outputguard.egress.plugins.module_utils.og_exit import API_FAILURE_KEYS, ModuleExit
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError

# Every exit returns these keys (failure included), plus msg, status, code and url on failure.
RESULT = {'changed': False, 'entries': [], 'revision': None}

FILTERS = ('target', 'q', 'kind', 'creator', 'deletable', 'expiring')


def flag(value):
    """The API's spelling of a boolean filter."""
    return None if value is None else ('true' if value else 'false')


def matches(entry, key):
    """Whether an entry passes the filter the API cannot apply: exactly this target (and ports)."""
    if key is None:
        return True
    target, ports = entry_key(entry)
    return target == key[0] and (key[1] is None or ports == key[1])


def main():
    argument_spec = dict(CONNECTION_ARGS)
    argument_spec.update(
        id=dict(type='int'),
        target=dict(type='str'),
        ports=dict(type='list', elements='str'),
        q=dict(type='str'),
        kind=dict(type='str', choices=['ip', 'cidr', 'domain']),
        creator=dict(type='str'),
        deletable=dict(type='bool'),
        expiring=dict(type='bool'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_by={'ports': 'target'},
                           mutually_exclusive=[('id', name) for name in FILTERS])
    params = module.params
    out = ModuleExit(module, RESULT, API_FAILURE_KEYS)
    key = None
    if params['target'] is not None:
        try:
            ports = params['ports']
            key = (parse_target(params['target']).value, None if ports is None else tuple(normalise_ports(ports)))
        except TargetError as exc:
            out.fail('%s; nothing to look up' % exc, status=-1, code='invalid_input')
    try:
        client = Client.from_params(params)
        if params['id'] is not None:
            one = client.get_entry(params['id'])
            entries = [one] if one is not None else []
            revision = client.revision()
        else:
            # An exact target narrows the listing through q (a substring match on the server), then matches here.
            q = params['q'] if params['q'] is not None or key is None else key[0]
            entries, revision = client.list_entries(
                q=q, kind=params['kind'], creator=params['creator'], deletable=flag(params['deletable']),
                expiring=flag(params['expiring']))
    except ApiError as exc:
        out.fail_from(exc)
    out.exit(entries=[e for e in entries if matches(e, key)], revision=revision)


if __name__ == '__main__':
    main()
