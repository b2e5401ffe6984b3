"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

Tests validate every response the API gives against these schemas, so the document stays true.
"""

from __future__ import annotations

S = "string"
NULLABLE_S = {"type": [S, "null"]}
TIME = {"type": [S, "null"], "format": "date-time"}


WINDOW = {"type": S, "enum": ["1h", "24h", "7d"]}
RATES = {f + "_per_second": {"type": "number", "minimum": 0}
         for f in ("out_bytes", "in_bytes", "out_packets", "in_packets")}
COUNTS = {f: {"type": "integer", "minimum": 0} for f in ("out_bytes", "in_bytes", "out_packets", "in_packets")}
ENTRY_USE = dict({"entry_id": {"type": "integer"},
                  "entry": dict(NULLABLE_S, description="the entry's name, kept after it was deleted"),
                  "deleted": {"type": "boolean"}}, **COUNTS, **{
    "shared_out_bytes": {"type": "integer", "minimum": 0, "description": "of out_bytes, those of elements other "
                         "entries produced too (they count for each of them)"},
    "shared_in_bytes": {"type": "integer", "minimum": 0}})


def ref(name):
    return {"$ref": "#/components/schemas/%s" % name}


def obj(props, required=None, extra=False):
    return {"type": "object", "properties": props, "required": list(required if required is not None else props),
            "additionalProperties": extra}


def page_of(item):
    return obj({"items": {"type": "array", "items": ref(item)}, "total": {"type": "integer", "minimum": 0},
                "page": {"type": "integer", "minimum": 1}, "per_page": {"type": "integer", "minimum": 1}},
               extra=True)


GAP = obj({"gateway": {"type": S}, "reason": {"type": S, "enum": ["family_disabled", "internal"]},
           "message": {"type": S, "description": "e.g. IPv6 is off on this gateway"}})
NOT_ENFORCED = {"type": "array", "items": GAP,
                "description": "the gateways that do not enforce this (their own policy refuses it) and why"}

SCHEMAS = {
    "Error": obj({"error": obj({"code": {"type": S}, "message": {"type": S}})}),
    "Address": obj({
        "address": {"type": S, "description": "a network in CIDR notation"},
        "source": {"type": S, "enum": ["typed", "resolved", "learned"],
                   "description": "learned: through a gateway's DNS forwarder (og-dns), see learned_via"},
        "first_seen": TIME, "last_seen": TIME,
        "grace_until": TIME,
        "published": {"type": "boolean"},
        "refused": NULLABLE_S,
        "learned_via": dict(NULLABLE_S, description="source learned: the gateway whose DNS learned the address"),
        "expires_at": dict(TIME, description="source learned: when the learned answer ends and the address is "
                           "removed (unless learned again)")}),
    "Entry": obj({
        "id": {"type": "integer"}, "target": {"type": S}, "kind": {"type": S, "enum": ["ip", "cidr", "domain"]},
        "wildcard": {"type": "boolean", "description": "a wildcard domain (*.example.com): learned through the "
                     "gateways' DNS forwarder only, never resolved by the central resolver"},
        "ports": {"type": "array", "items": {"type": S}}, "deletable": {"type": "boolean"},
        "expires_at": TIME, "comment": {"type": S}, "created_by": {"type": S}, "created_at": TIME,
        "grace_seconds": {"type": ["integer", "null"]}, "resolved_at": TIME, "resolve_error": NULLABLE_S,
        "capped": {"type": "boolean"},
        "addresses": {"type": "array", "items": ref("Address")},
        "elements": {"type": "array", "description": "GET /entries/{id} only: the published elements",
                     "items": obj({"element": {"type": S}, "not_enforced": NOT_ENFORCED})},
        "revision": {"type": ["integer", "null"]}},
        required=["id", "target", "kind", "wildcard", "ports", "deletable", "expires_at", "comment", "created_by",
                  "created_at", "addresses"]),
    "EntryInput": {"type": "object", "required": ["target"], "additionalProperties": False, "properties": {
        "target": {"type": S, "description": "IPv4/IPv6 address, CIDR, domain name, or wildcard domain: *.example.com "
                   "matches one or more labels before example.com, never example.com itself (add that separately); "
                   "the star is the whole first label and a name of at least two labels follows it (*, *.com, "
                   "a.*.example.com, *x.example.com and **.example.com are refused). A wildcard is enforced by the "
                   "gateways' DNS forwarder only (docs/dns.md)",
                   "examples": ["198.51.100.10", "198.51.100.0/24", "api.example.com", "*.example.com"]},
        "ports": {"type": "array", "items": {"type": S, "examples": ["443/tcp", "8000-8100/tcp", "53/udp"]}},
        "deletable": {"type": "boolean", "default": True},
        "expires_at": {"type": [S, "null"], "format": "date-time"},
        "comment": {"type": S, "maxLength": 2000},
        "grace_seconds": {"type": ["integer", "null"], "minimum": 0, "maximum": 604800}}},
    "EntryPatch": {
        "type": "object", "additionalProperties": False,
        "description": "a JSON merge patch (RFC 7396): the fields given are set, null resets one to what a creation "
                       "without it gives; target and the other read-only fields are refused (400); {} changes nothing",
        "properties": {
            "ports": {"type": ["array", "null"], "items": {"type": S},
                      "description": "null or []: every port; a change of ports is one revision"},
            "deletable": {"type": "boolean", "description": "admin only, one way: true -> false (undeletable never "
                          "becomes deletable again)"},
            "expires_at": {"type": [S, "null"], "format": "date-time", "description": "null: never; of an "
                           "undeletable entry admin only"},
            "comment": {"type": [S, "null"], "maxLength": 2000},
            "grace_seconds": {"type": ["integer", "null"], "minimum": 0, "maximum": 604800,
                              "description": "domain entries only; null: the server's default"}}},
    # An item of an import: an entry's fields, plus the read-only fields of an export, which are ignored.
    "ImportItem": {"type": "object", "required": ["target"], "additionalProperties": False, "properties": dict(
        {"id": {}, "kind": {}, "wildcard": {}, "created_by": {}, "created_at": {}, "addresses": {}, "revision": {},
         "grace_seconds": {}, "resolved_at": {}, "resolve_error": {}, "capped": {}},
        target={"type": S, "description": "as in EntryInput, a wildcard such as *.example.com too"},
        ports={"type": "array", "items": {"type": S}}, deletable={"type": "boolean"},
        expires_at={"type": [S, "null"], "format": "date-time"}, comment={"type": S, "maxLength": 2000})},
    "EntryPage": dict(page_of("Entry"), required=["items", "total", "page", "per_page", "revision"]),
    "Why": {"oneOf": [ref("WhyAddress"), ref("WhyName")]},
    "WhyName": obj({
        "name": {"type": S, "description": "the name asked about, normalised"},
        "allowed": {"type": "boolean", "description": "an entry covers the name"},
        "internal": {"type": "array", "items": {"type": S}, "maxItems": 0},
        "entries": {"type": "array", "items": obj({
            "entry_id": {"type": "integer"}, "target": {"type": S}, "kind": {"type": S, "enum": ["domain"]},
            "wildcard": {"type": "boolean"}, "ports": {"type": "array", "items": {"type": S}},
            "match": {"type": S, "enum": ["exact", "wildcard"]},
            "resolved_by": {"type": S, "description": "who learns the entry's addresses: the central resolver "
                            "and the gateways' DNS forwarder, or (a wildcard) the forwarder only"},
            "until": TIME, "deletable": {"type": "boolean"}})}}),
    "WhyAddress": obj({
        "address": {"type": S}, "allowed": {"type": "boolean"},
        "internal": {"type": "array", "items": {"type": S}},
        "entries": {"type": "array", "items": obj({
            "entry_id": {"type": "integer"}, "target": {"type": S}, "kind": {"type": S},
            "ports": {"type": "array", "items": {"type": S}}, "network": {"type": S}, "source": {"type": S},
            "since": TIME, "until": TIME, "published": {"type": "boolean"}, "refused": NULLABLE_S,
            "deletable": {"type": "boolean"}, "not_enforced": NOT_ENFORCED,
            "last_seen": dict(TIME, description="resolved: the resolver's last answer holding it; learned: the "
                              "gateway's last report of it; typed: when the entry was made"),
            "learned_via": dict(NULLABLE_S, description="source learned: the gateway whose DNS learned it last"),
            "expires_at": dict(TIME, description="source learned: when the learned answer ends (then until)"),
            "through": {"type": S, "description": "where it came from, as a sentence",
                        "examples": ["learned through gw1's DNS", "resolved by the central resolver",
                                     "the entry's own address"]}},
            required=["entry_id", "target", "kind", "ports", "network", "source", "since", "until", "published",
                      "refused", "deletable", "last_seen", "learned_via", "expires_at", "through"])}}),
    "Unlisted": obj({
        "gateway": {"type": S, "description": "the gateway whose DNS forwarder was asked"},
        "name": {"type": S, "description": "the name asked for, lower case without its final dot (the root: .)"},
        "count": {"type": "integer", "minimum": 1, "description": "queries for it on that gateway"},
        "first_seen": TIME, "last_seen": TIME}),
    "UnlistedPage": dict(page_of("Unlisted"), required=["items", "total", "page", "per_page", "sort", "max_rows",
                                                        "retention_days"]),
    "ImportResult": obj({"created": {"type": "array", "items": {"type": "integer"}},
                         "skipped": {"type": "array", "items": obj({"item": {"type": "integer"},
                                                                    "id": {"type": "integer"},
                                                                    "target": {"type": S}})},
                         "revision": {"type": ["integer", "null"]}}),
    "Export": obj({"entries": {"type": "array", "items": {"type": "object"}}, "revision": {"type": "integer"}}),
    "Gateway": obj({
        "name": {"type": S}, "address": {"type": S},
        "connected": {"type": "boolean", "description": "its session is alive: it said hello to a running replica "
                      "and was heard from within the last 30 s"},
        "agent_version": {"type": S}, "applied_revision": {"type": "integer"}, "lag": {"type": "integer"},
        "digest_match": {"type": "boolean"}, "elements": {"type": "integer"}, "connected_at": TIME,
        "last_seen": TIME,
        "in_sync": {"type": "boolean", "description": "at the head revision, holding what it is meant to hold"},
        "status": {"type": S, "examples": ["in sync; not enforced: 1 skipped: no IPv6",
                                           "differs at revision 12: 2 missing from its kernel, 1 extra in its kernel"]},
        "differences": {"type": "array", "items": obj({
            "kind": {"type": S, "enum": ["skipped", "refused", "missing", "extra"]},
            "reason": {"type": S, "enum": ["no_ipv6", "no_ipv4", "internal", "kernel"]},
            "label": {"type": S, "examples": ["skipped: no IPv6", "refused by its own policy",
                                              "missing from its kernel", "extra in its kernel"]},
            "count": {"type": "integer", "minimum": 0},
            "elements": {"type": "array", "maxItems": 100, "items": obj({"element": {"type": S},
                                                                         "message": {"type": S}})}}),
            "description": "what of the published set this gateway does not hold as published, grouped by why: "
                           "skipped (an address family it does not have) and refused by its own policy (its "
                           "internal networks) while in sync; missing from and extra in its kernel as its agent "
                           "read them back at its last ack (agents with the differs feature); the first 100 of "
                           "each named"},
        "counts": {"oneOf": [{"type": "null"}, obj({"holds": {"type": "integer"}, "expected": {"type": "integer"}})],
                   "description": "when it differs: the elements its last ack counted and those expected of it"},
        "families": {"type": ["array", "null"], "items": {"type": "integer", "enum": [4, 6]},
                     "description": "the address families it holds; null if its agent did not say"},
        "mode": {"type": S, "enum": ["enforce", "observe"], "description": "the gateway's mode: set through PUT "
                 "/gateways/{name}/mode, else what its agent said it runs (og_gateway_mode), else enforce"},
        "running_mode": {"type": [S, "null"], "enum": ["enforce", "observe", None],
                         "description": "what the agent runs: its hello's mode, then each mode the server sent it; "
                         "null for an agent from before modes (it enforces)"},
        "mode_set": {"type": [S, "null"], "enum": ["enforce", "observe", None],
                     "description": "the mode set through the API; null: the agent's own (og_gateway_mode)"},
        "not_enforced": {"oneOf": [{"type": "null"}, obj({
            "count": {"type": "integer", "minimum": 0}, "reasons": {"type": "array", "items": {"type": S}},
            "elements": {"type": "array", "maxItems": 100, "items": obj({
                "element": {"type": S}, "reason": {"type": S, "enum": ["family_disabled", "internal"]},
                "message": {"type": S}})}})],
            "description": "published elements this gateway's own policy refuses (the first 100 named)"}}),
    "Counts": obj(COUNTS),
    "EntryUse": obj(ENTRY_USE),
    "Traffic": obj({
        "window": WINDOW, "gateway": NULLABLE_S,
        "total": dict(ref("Counts"), description="through the gateways, each byte once"),
        "entries": {"type": "array", "items": ref("EntryUse")},
        "destinations": {"type": "array", "items": obj(dict({"element": {"type": S}}, **COUNTS))}}),
    "EntryTraffic": obj(dict(ENTRY_USE, **{
        "window": WINDOW, "gateway": NULLABLE_S,
        "shared_with": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": S}},
                        "description": "element -> the other entries that produce it now"},
        "series": {"type": "array", "items": obj({"minute": TIME, "out_bytes": {"type": "integer"},
                                                  "in_bytes": {"type": "integer"}})}})),
    "TrafficSeries": obj({
        "window": WINDOW, "gateway": NULLABLE_S,
        "destination": dict(NULLABLE_S, description="the destination element filtered on, canonical"),
        "entry": {"type": ["integer", "null"]},
        "client": dict(NULLABLE_S, description="the client address filtered on, canonical"),
        "bucket_seconds": {"type": "integer", "enum": [60, 600, 3600],
                           "description": "60 for 1h, 600 for 24h, 3600 for 7d"},
        "start": dict(TIME, description="UTC, the first bucket's start"),
        "end": dict(TIME, description="UTC, now: the last bucket holds it and is partial"),
        "units": {"type": "object", "additionalProperties": {"type": S}},
        "points": {"type": "array", "items": obj(dict({"time": TIME}, **RATES, **COUNTS))}}),
    "TrafficClients": obj({
        "window": WINDOW, "gateway": NULLABLE_S, "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        "units": {"type": "object", "additionalProperties": {"type": S}},
        "clients": {"type": "array", "items": obj(dict(
            {"client": {"type": S, "description": "a client address; out: what it sent, in: what it received"}},
            **COUNTS, bytes_per_second={"type": "number", "minimum": 0,
                                        "description": "out_bytes + in_bytes over the window's seconds"}))}}),
    "Blocked": obj({
        "id": {"type": "integer"}, "gateway": {"type": S},
        "client": {"type": S, "description": "the client address that tried"},
        "destination": {"type": S}, "proto": {"type": S, "examples": ["tcp", "udp", "icmp"]},
        "port": {"type": S, "description": "the destination port (tcp, udp, sctp), the ICMP type, or 0",
                 "examples": ["443", "echo-request"]},
        "observed": {"type": "boolean", "description": "let through by a gateway in observe mode: would have been "
                     "refused"},
        "count": {"type": "integer", "minimum": 1, "description": "new connections attempted"},
        "bytes": {"type": "integer", "minimum": 0, "description": "bytes of their first packets"},
        "first_seen": TIME, "last_seen": dict(TIME, description="within one agent counters interval (15 s)"),
        "entry": obj({"target": {"type": S}, "ports": {"type": "array", "items": {"type": S}}},
                     extra=False),
        "names": {"type": "array", "items": {"type": S}, "maxItems": 5,
                  "description": "names the gateway's DNS forwarder answered with the destination, the most recent "
                                 "first (at most 5; empty when it answered none, e.g. the client did not ask it)"}}),
    "BlockedPage": dict(page_of("Blocked"), required=["items", "total", "page", "per_page"]),
    "GatewayMode": obj({"name": {"type": S}, "mode": {"type": S, "enum": ["enforce", "observe"]},
                        "before": {"type": [S, "null"]}, "running_mode": {"type": [S, "null"]}}),
    "GatewayList": obj({"revision": {"type": "integer"}, "items": {"type": "array", "items": ref("Gateway")}}),
    "AuditEvent": obj({
        "id": {"type": "integer"}, "at": TIME, "actor": {"type": S}, "actor_kind": {"type": S},
        "remote_addr": {"type": S}, "action": {"type": S}, "object_type": {"type": S}, "object_id": {"type": S},
        "target": {"type": S, "description": "what the event concerns by name: an entry's target, a user or token "
                   "name, or the value a refused request named (\"\" for events from before migration 0009)"},
        "outcome": {"type": S, "enum": ["done", "refused"]},
        "reason": dict(NULLABLE_S, description="outcome refused: the reason the actor was given"),
        "summary": {"type": S}, "before": {"type": ["object", "null"]},
        "after": {"type": ["object", "null"], "description": "the object after the change; for a refusal what "
                  "the request asked for (never a password)"},
        "revision": {"type": ["integer", "null"]}}),
    "AuditPage": dict(page_of("AuditEvent"), required=["items", "total", "page", "per_page"]),
    "Token": obj({
        "id": {"type": "integer"}, "name": {"type": S},
        "role": {"type": S, "enum": ["viewer", "editor", "admin", "gateway"]},
        "created_at": TIME, "created_by": {"type": S}, "last_used": TIME, "revoked": {"type": "boolean"},
        "revoked_at": TIME, "token": {"type": S, "description": "the secret; only in the answer to POST"}},
        required=["id", "name", "role", "created_at", "last_used", "revoked"]),
    "TokenList": obj({"items": {"type": "array", "items": ref("Token")}}),
    "TokenInput": obj({"name": {"type": S, "minLength": 1, "maxLength": 128},
                       "role": {"type": S, "enum": ["viewer", "editor", "admin", "gateway"]}}),
}


def _err(description):
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _ok(schema, description="OK", status="200"):
    return {status: {"description": description, "content": {"application/json": {"schema": ref(schema)}}}}


def _with_etag(responses):
    """responses whose 200 carries the entry's ETag header (for If-Match on PATCH)."""
    responses["200"]["headers"] = {"ETag": {"description": "the entry's entity tag: send it as If-Match with PATCH",
                                            "schema": {"type": S}}}
    return responses


COMMON = {"401": _err("no valid token"), "403": _err("the token's role may not do this"),
          "503": _err("the database is not reachable; nothing was changed (Retry-After)")}
AUDIT_ACTION = "exact, or a prefix ending in '.' or '*' (entry. matches entry.create, entry.delete ...)"
PAGE_PARAMS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000000}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
]


def _q(name, schema=None, description=""):
    return {"name": name, "in": "query", "schema": schema or {"type": S}, "description": description}


PATHS = {
    "/entries": {
        "get": {"summary": "List entries", "operationId": "listEntries",
                "parameters": PAGE_PARAMS + [
                    _q("q", description="text in target or comment"),
                    _q("kind", {"type": S, "enum": ["ip", "cidr", "domain"]}),
                    _q("creator"), _q("deletable", {"type": S, "enum": ["true", "false"]}),
                    _q("expiring", {"type": S, "enum": ["true", "false"]})],
                "responses": dict(_ok("EntryPage"), **{"400": _err("bad filter")}, **COMMON)},
        "post": {"summary": "Create an entry", "operationId": "createEntry",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": ref("EntryInput")}}},
                 "responses": dict(_ok("Entry", "created", "201"), **{
                     "400": _err("invalid target, ports, expiry or body"),
                     "409": _err("an entry for this target and ports exists; the message names its id")},
                     **COMMON)}},
    "/entries/{entry_id}": {
        "parameters": [{"name": "entry_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "get": {"summary": "One entry with its addresses and where they came from", "operationId": "getEntry",
                "responses": _with_etag(dict(_ok("Entry"), **{"404": _err("no such entry")}, **COMMON))},
        "patch": {"summary": "Change an entry in place (JSON merge patch): comment, ports, expiry, grace, deletable",
                  "description": "Send If-Match with the ETag of a GET to refuse the change (412) when the entry "
                                 "changed since; without it the last write wins. A revision is recorded only when "
                                 "the published elements change (ports); the audit event entry.update carries "
                                 "before and after.",
                  "operationId": "updateEntry",
                  "parameters": [{"name": "If-Match", "in": "header", "required": False, "schema": {"type": S},
                                  "description": "the ETag of the entry as read (or *)"}],
                  "requestBody": {"required": True, "content": {
                      "application/merge-patch+json": {"schema": ref("EntryPatch")},
                      "application/json": {"schema": ref("EntryPatch")}}},
                  "responses": _with_etag(dict(_ok("Entry", "changed (or already so); revision is null when the "
                                                   "published elements did not change"), **{
                      "400": _err("an invalid value, an unknown field, or a read-only one (target, id ...)"),
                      "403": _err("the role may not write; deletable (admin only; never back to true); an "
                                  "undeletable entry's ports or expiry (admin only)"),
                      "404": _err("no such entry (deleted or expired)"),
                      "409": _err("an entry for this target with these ports exists; the message names its id"),
                      "412": _err("If-Match does not match the entry's current ETag: read it again"),
                      "415": _err("the body is not application/merge-patch+json or application/json")},
                      **{"401": COMMON["401"], "503": COMMON["503"]}))},
        "delete": {"summary": "Delete an entry", "operationId": "deleteEntry",
                   "responses": dict({"204": {"description": "deleted"}, "404": _err("no such entry")},
                                     **{"401": COMMON["401"], "503": COMMON["503"],
                                        "403": _err("the role may not write, or the entry is undeletable")})}},
    "/entries/export": {
        "get": {"summary": "Every entry, as JSON or CSV", "operationId": "exportEntries",
                "parameters": [_q("format", {"type": S, "enum": ["json", "csv"]})],
                "responses": dict({"200": {"description": "OK", "content": {
                    "application/json": {"schema": ref("Export")}, "text/csv": {"schema": {"type": S}}}},
                    "400": _err("unknown format")}, **COMMON)}},
    "/entries/import": {
        "post": {"summary": "Import entries (JSON or CSV), all or nothing, one revision",
                 "operationId": "importEntries",
                 "parameters": [_q("on_duplicate", {"type": S, "enum": ["skip", "error"]})],
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": obj({"entries": {"type": "array", "items": ref("ImportItem")}})},
                     "text/csv": {"schema": {"type": S}}}},
                 "responses": dict(_ok("ImportResult", "created", "201"), **_ok("ImportResult", "nothing new"),
                                   **{"400": _err("an item is invalid; nothing was imported"),
                                      "413": _err("too many items")}, **COMMON)}},
    "/addresses/{address}": {
        "parameters": [{"name": "address", "in": "path", "required": True,
                        "description": "an IP address, or a domain name (then the exact entry of the name and "
                                       "every wildcard entry covering it: api.example.com shows *.example.com)",
                        "schema": {"type": S,
                                   "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"format": "hostname"}]}}],
        "get": {"summary": "Why is this address or name allowed: every entry that allows it (an address: since and "
                           "until when)",
                "operationId": "whyAllowed",
                "responses": dict(_ok("Why"), **{"400": _err("neither an IP address nor a domain name")}, **COMMON)}},
    "/dns/unlisted": {
        "get": {"summary": "Names no entry allows that clients asked the gateways' DNS forwarders (og-dns) for, per "
                           "gateway: count, first and last seen (at most max_rows rows, kept retention_days days)",
                "operationId": "listUnlisted",
                "parameters": PAGE_PARAMS + [
                    _q("sort", {"type": S, "enum": ["newest", "busiest"], "default": "newest"},
                       "newest: last seen first; busiest: most queries first"),
                    _q("gateway", description="one gateway's names only"),
                    _q("name", {"type": S, "minLength": 1, "maxLength": 255},
                       "a part of the name (partner), or *.example.com: the names under example.com (not "
                       "example.com itself); case-insensitive"),
                    _q("since", {"type": S, "format": "date-time"}, "last seen at or after this time")],
                "responses": dict(_ok("UnlistedPage"), **{"400": _err("bad sort, name, since, page or per_page")},
                                  **COMMON)}},
    "/gateways": {
        "get": {"summary": "The gateway fleet: connection, applied revision, lag, digest match",
                "operationId": "listGateways", "responses": dict(_ok("GatewayList"), **COMMON)}},
    "/gateways/{name}/mode": {
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": S}}],
        "put": {"summary": "Set a gateway to enforce or observe (admin, audited); its agent follows within a second",
                "operationId": "setGatewayMode",
                "requestBody": {"required": True, "content": {"application/json": {"schema": obj(
                    {"mode": {"type": S, "enum": ["enforce", "observe"]}})}}},
                "responses": dict(_ok("GatewayMode"), **{"400": _err("mode is not enforce or observe"),
                                                         "404": _err("no such gateway")}, **COMMON)}},
    "/blocked": {
        "get": {"summary": "Attempts the gateways refused (or let through in observe mode), newest and busiest "
                           "first", "operationId": "listBlocked",
                "parameters": PAGE_PARAMS + [
                    _q("client", description="an address, or a network of up to 4,096 addresses"),
                    _q("gateway", description="a gateway name"),
                    _q("destination", description="an address, or a network of up to 4,096 addresses"),
                    _q("observed", {"type": S, "enum": ["true", "false"]},
                       "true: only what observe mode let through; false: only what was refused"),
                    _q("sort", {"type": S, "enum": ["newest", "busiest"]}),
                    _q("name", description="a part of a name the gateway's DNS answered with the destination "
                                           "(partner), or *.example.com for the names under example.com")],
                "responses": dict(_ok("BlockedPage"), **{"400": _err("bad filter")}, **COMMON)}},
    "/blocked/{attempt_id}/allow": {
        "parameters": [{"name": "attempt_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "post": {"summary": "Allow what a blocked attempt asked for: an entry for its destination (and port), or "
                            "for one of its names (a domain entry, same port scope), permanent or for 1 h, 1 day or "
                            "1 week, created like POST /entries",
                 "operationId": "allowBlocked",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": obj(
                     {"duration": {"type": S, "enum": ["permanent", "1h", "1d", "1w"]},
                      "name": {"type": S, "description": "one of the row's names: the entry is for this name "
                                                         "instead of the destination (no wildcard)"}},
                     required=[])}}},
                 "responses": dict(_ok("Entry", "created", "201"), **{
                     "400": _err("bad duration or body, a name the row's gateway's DNS did not answer with its "
                                 "destination, or the destination is refused as an entry"),
                     "404": _err("no such blocked attempt"),
                     "409": _err("an entry for this destination and port exists; the message names its id")},
                     **COMMON)}},
    "/traffic": {
        "get": {"summary": "Traffic in a window: the total (each byte once), top entries (shared bytes marked, "
                           "deleted entries kept) and top destinations", "operationId": "getTraffic",
                "parameters": [_q("window", WINDOW), _q("gateway")],
                "responses": dict(_ok("Traffic"), **{"400": _err("unknown window")}, **COMMON)}},
    "/traffic/series": {
        "get": {"summary": "Traffic over time as rates (bytes/s, packets/s) on a UTC axis ending at now, for the "
                           "fleet, a gateway, a destination, an entry or a client address; JSON or CSV",
                "operationId": "getTrafficSeries",
                "parameters": [_q("window", WINDOW), _q("gateway"),
                               _q("destination", description="an element: 198.51.100.20, 198.51.100.0/24 or "
                                                             "'198.51.100.20/32 443/tcp'"),
                               _q("entry", {"type": "integer"}, "an entry id (also of a deleted entry)"),
                               _q("client", description="a client address (10.88.0.2): what it sent (out) and "
                                                        "received (in); one of destination, entry or client"),
                               _q("format", {"type": S, "enum": ["json", "csv"]})],
                "responses": dict({"200": {"description": "OK", "content": {
                    "application/json": {"schema": ref("TrafficSeries")}, "text/csv": {"schema": {"type": S}}}},
                    "400": _err("unknown window, format or a bad filter"),
                    "404": _err("no such entry and no traffic of it")}, **COMMON)}},
    "/traffic/clients": {
        "get": {"summary": "The client addresses that moved the most bytes through the gateways in a window, with "
                           "bytes and packets each way and the average rate; JSON or CSV",
                "operationId": "getTrafficClients",
                "parameters": [_q("window", WINDOW), _q("gateway"),
                               _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "default 20"),
                               _q("format", {"type": S, "enum": ["json", "csv"]})],
                "responses": dict({"200": {"description": "OK", "content": {
                    "application/json": {"schema": ref("TrafficClients")}, "text/csv": {"schema": {"type": S}}}},
                    "400": _err("unknown window, format or a bad limit")}, **COMMON)}},
    "/entries/{entry_id}/traffic": {
        "parameters": [{"name": "entry_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "get": {"summary": "One entry's traffic (also of a deleted or expired entry), with its shared part",
                "operationId": "getEntryTraffic",
                "parameters": [_q("window", WINDOW), _q("gateway")],
                "responses": dict(_ok("EntryTraffic"), **{"400": _err("unknown window"),
                                                          "404": _err("no such entry and no traffic of it")},
                                  **COMMON)}},
    "/audit": {
        "get": {"summary": "The audit log", "operationId": "listAudit",
                "parameters": PAGE_PARAMS + [_q("actor"), _q("action", description=AUDIT_ACTION),
                                             _q("object_type"), _q("object_id"),
                                             _q("target", description="the event's target or object id; '*' "
                                                "matches any characters (*.example.com)"),
                                             _q("outcome", {"type": S, "enum": ["done", "refused"]}),
                                             _q("q"), _q("since", {"type": S, "format": "date-time"}),
                                             _q("until", {"type": S, "format": "date-time"})],
                "responses": dict(_ok("AuditPage"), **{"400": _err("bad filter")}, **COMMON)}},
    "/tokens": {
        "get": {"summary": "API and gateway tokens (admin)", "operationId": "listTokens",
                "responses": dict(_ok("TokenList"), **COMMON)},
        "post": {"summary": "Create a token; the secret is in this answer only", "operationId": "createToken",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": ref("TokenInput")}}},
                 "responses": dict(_ok("Token", "created", "201"),
                                   **{"400": _err("invalid name or role"), "409": _err("name taken")}, **COMMON)}},
    "/tokens/{token_id}": {
        "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "delete": {"summary": "Revoke a token", "operationId": "revokeToken",
                   "responses": dict({"204": {"description": "revoked"}, "404": _err("no such token")}, **COMMON)}},
}


def document(version):
    return {
        "openapi": "3.1.0",
        "info": {"title": "outputguard.egress server API", "version": version,
                 "description": "Allowlist entries, the gateway fleet, the audit log and tokens. "
                                "Every error is {\"error\": {\"code\", \"message\"}}."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": PATHS,
    }
