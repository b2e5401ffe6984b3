# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """The connection options of the modules that talk to the server's REST API (og_entry, og_entry_info)."""

    DOCUMENTATION = r"""
options:
  server_url:
    description:
      - The server's base URL, such as V(https://og.example.com); a trailing C(/api/v1) is accepted.
      - If not set, the environment variable E(OG_SERVER_URL) is used.
    type: str
    required: true
  token:
    description:
      - An API token (C(og-server token create)), sent as a C(Bearer) token in the C(Authorization) header.
      - If not set, the environment variable E(OG_TOKEN) is used.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the server's TLS certificate. Only set to V(false) for a test server.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of the certificate authority that signed the server's certificate.
    type: path
  timeout:
    description:
      - Seconds to wait for each answer of the server.
    type: int
    default: 30
"""
