# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client of the server's REST API (/api/v1) for the og_entry modules, on open_url only.

No AnsibleModule in here: the modules pass their parameters in, and every failure is an ApiError whose message
names the request, the value and the fix, ready for fail_json.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import socket
import ssl
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError, SSLValidationError, open_url

from .og_netpolicy import AddressPolicy, format_port_spec, parse_port_spec

# Options shared by og_entry and og_entry_info; documented once, in the og_api doc fragment.
CONNECTION_ARGS = dict(
    server_url=dict(type='str', required=True, fallback=(env_fallback, ['OG_SERVER_URL'])),
    token=dict(type='str', required=True, no_log=True, fallback=(env_fallback, ['OG_TOKEN'])),
    validate_certs=dict(type='bool', default=True),
    ca_path=dict(type='path'),
    timeout=dict(type='int', default=30),
)

PAGE_SIZE = 500     # the API's largest per_page

# Only the syntax is checked here; whether a target is internal or too broad is the server's decision (its
# configuration may differ from the defaults), so the module lets the server refuse it with its own message.
_SYNTAX_ONLY = AddressPolicy(internal_networks=(), min_prefix_v4=0, min_prefix_v6=0)


class ApiError(Exception):
    """A failed request: msg for fail_json, plus the HTTP status (-1 when there was no answer) and error code."""

    def __init__(self, msg, status=-1, code=None, url=None):
        super(ApiError, self).__init__(msg)
        self.msg = msg
        self.status = status
        self.code = code
        self.url = url

    def as_dict(self):
        return {'msg': self.msg, 'status': self.status, 'code': self.code, 'url': self.url}


def parse_target(text):
    """The server's canonical Target (kind, value: lower-case domain, compressed IPv6, ...); raises TargetError."""
    return _SYNTAX_ONLY.parse_target(text)


def normalise_ports(ports):
    """The server's canonical, sorted list of port specs ('443/tcp', '8000-8100/tcp'); raises TargetError."""
    return sorted(set(format_port_spec(*parse_port_spec(p)) for p in (ports or [])))


def normalise_expiry(value):
    """None for no expiry ('' or None), else the server's form of the time (UTC, '2026-12-31T17:00:00Z').

    A time without a zone is UTC, as on the server. Raises ValueError naming the value.
    """
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        when = datetime.datetime.fromisoformat(text.replace('Z', '+00:00').replace('z', '+00:00'))
    except ValueError:
        raise ValueError("expires_at %r is not an ISO 8601 time such as 2026-12-31T18:00:00Z" % (value,))
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when.isoformat() + 'Z'


def entry_key(entry):
    """(target, ports) of an entry as the server returns it: what makes two entries the same."""
    return entry['target'], tuple(entry.get('ports') or ())


def base_url(server_url):
    """The /api/v1 URL of a server given as https://host[:port][/api/v1]; raises ApiError for anything else."""
    url = (server_url or '').strip().rstrip('/')
    if not url.startswith(('http://', 'https://')):
        raise ApiError("server_url %r must start with http:// or https://, e.g. https://og.example.com"
                       % (server_url,))
    if url.endswith('/api/v1'):
        url = url[:-len('/api/v1')]
    return url + '/api/v1'


class Client:
    """Requests to one server with one token; JSON in, JSON out, ApiError on every failure."""

    def __init__(self, server_url, token, validate_certs=True, ca_path=None, timeout=30):
        self.base = base_url(server_url)
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    @classmethod
    def from_params(cls, params):
        return cls(params['server_url'], params['token'], params['validate_certs'], params['ca_path'],
                   params['timeout'])

    def request(self, method, path, body=None, query=None, headers=None):
        """Send one request; return (status, decoded JSON or None). Raises ApiError for errors and 4xx/5xx."""
        return self.exchange(method, path, body, query, headers)[:2]

    def exchange(self, method, path, body=None, query=None, headers=None, content_type='application/json'):
        """request(), also returning the answer's headers: (status, decoded JSON or None, headers)."""
        url = self.base + path
        if query:
            url += '?' + urlencode(query)
        sent = {'Authorization': 'Bearer %s' % self.token, 'Accept': 'application/json'}
        sent.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body)
            sent['Content-Type'] = content_type
        try:
            response = open_url(url, data=data, headers=sent, method=method, validate_certs=self.validate_certs,
                                ca_path=self.ca_path, timeout=self.timeout, http_agent='outputguard.egress',
                                follow_redirects='safe', use_netrc=False)
            status, raw, answered = response.getcode(), response.read(), response.headers
        except HTTPError as exc:
            raise self._http_error(method, url, exc.code, exc.read() if exc.fp is not None else b'')
        except SSLValidationError as exc:
            raise ApiError("cannot verify the TLS certificate of %s: %s. Give the CA with ca_path, or set "
                           "validate_certs=false for a test server" % (self.base, to_native(exc)), url=url)
        except (URLError, UrlsConnectionError, socket.timeout, OSError) as exc:
            reason = getattr(exc, 'reason', exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                # urllib reports a refused certificate as a URLError, not as SSLValidationError.
                raise ApiError("cannot verify the TLS certificate of %s: %s. Give the CA with ca_path, or set "
                               "validate_certs=false for a test server" % (self.base, to_native(reason)), url=url)
            raise ApiError("cannot reach the outputguard server at %s (%s %s): %s. Check server_url (or "
                           "OG_SERVER_URL) and that og-server is running"
                           % (self.base, method, path, to_native(reason)), url=url)
        if not raw:
            return status, None, answered
        try:
            return status, json.loads(to_native(raw)), answered
        except ValueError:
            raise ApiError("%s %s answered %d with a body that is not JSON (%r...); is server_url an outputguard "
                           "server?" % (method, url, status, to_native(raw)[:200]), status=status, url=url)

    def _http_error(self, method, url, status, raw):
        code, message = None, to_native(raw or b'')[:500]
        try:
            error = json.loads(message)['error']
            code, message = error['code'], error['message']
        except (ValueError, KeyError, TypeError):
            pass
        if status == 401:
            msg = ("the server at %s refused the token (401 %s: %s). Check the token option (or OG_TOKEN): it "
                   "must be an API token created with `og-server token create`" % (self.base, code, message))
        elif status == 403 and code == 'forbidden':
            msg = ("%s %s is not allowed (403): %s. Use a token with the editor or admin role"
                   % (method, url, message))
        else:
            msg = "%s %s failed with %d %s: %s" % (method, url, status, code or '', message)
        return ApiError(msg, status=status, code=code, url=url)

    # The calls the modules make.

    def list_entries(self, **filters):
        """Every entry matching the API's filters (all pages, newest first) and the revision of the first page."""
        query = dict((k, v) for k, v in filters.items() if v is not None)
        items, page, revision = [], 1, None
        while True:
            query.update(page=page, per_page=PAGE_SIZE)
            status, data = self.request('GET', '/entries', query=sorted(query.items()))
            if revision is None:
                revision = data.get('revision')
            items.extend(data['items'])
            if not data['items'] or len(items) >= data['total']:
                return items, revision
            page += 1

    def find_entry(self, target, ports):
        """The entry with exactly this normalised target and ports, or None."""
        items, _revision = self.list_entries(q=target)
        for item in items:
            if entry_key(item) == (target, tuple(ports)):
                return item
        return None

    def get_entry(self, entry_id):
        """One entry by id, or None when it does not exist."""
        try:
            return self.request('GET', '/entries/%d' % int(entry_id))[1]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create_entry(self, fields):
        return self.request('POST', '/entries', body=fields)[1]

    def read_entry(self, entry_id):
        """(entry, its ETag) by id; raises ApiError (404 when it does not exist)."""
        status, entry, headers = self.exchange('GET', '/entries/%d' % int(entry_id))
        return entry, headers.get('ETag')

    def update_entry(self, entry_id, fields, etag=None):
        """Change an entry in place (PATCH with a JSON merge patch) and return it. With the ETag of the read the
        change was planned on (If-Match), a change someone made since fails (412) instead of being overwritten."""
        return self.exchange('PATCH', '/entries/%d' % int(entry_id), body=fields,
                             headers={'If-Match': etag} if etag else None,
                             content_type='application/merge-patch+json')[1]

    def delete_entry(self, entry_id):
        self.request('DELETE', '/entries/%d' % int(entry_id))

    def revision(self):
        """The server's current revision (head of the change log)."""
        return self.request('GET', '/entries', query=[('per_page', 1)])[1].get('revision')
