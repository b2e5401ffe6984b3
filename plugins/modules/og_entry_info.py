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
  token:
    description:
      - An API token of any role that may read (viewer, editor or admin).
      - If not set, the environment variable E(OG_TOKEN) is used.
    type: str
    required: true
  id:
    description:
      - Only the entry with this id (an empty list when there is none).
      - Mutually exclusive with the other filters.
    type: int
  target:
    description:
      - Only the entry or entries with exactly this target, compared in the server's normal form
        (V(Partner.Example.COM.) finds V(partner.example.com)).
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
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - outputguard.egress.og_api
notes:
  - The pages are read one after the other; entries created or deleted meanwhile may be missed or listed twice.
    RV(revision) is the revision when the first page was read.
seealso:
  - module: outputguard.egress.og_entry
author:
  - outputguard.egress contributors (@outputguard)
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
  description: The server's current revision (head of its change log).
  returned: always
  type: int
  sample: 57
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.outputguard.egress.plugins.module_utils.og_api import (
    CONNECTION_ARGS, ApiError, Client, entry_key, normalise_ports, parse_target)
from ansible_collections.outputguard.egress.plugins.module_utils.og_netpolicy import TargetError


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
    key = None
    if params['target'] is not None:
        try:
            ports = params['ports']
            key = (parse_target(params['target']).value, None if ports is None else tuple(normalise_ports(ports)))
        except TargetError as exc:
            module.fail_json(msg='%s; nothing to look up' % exc, entries=[], revision=None)
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
        module.fail_json(entries=[], revision=None, **exc.as_dict())
    module.exit_json(changed=False, entries=[e for e in entries if matches(e, key)], revision=revision)


if __name__ == '__main__':
    main()
