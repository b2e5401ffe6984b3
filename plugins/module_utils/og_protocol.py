# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway protocol (docs/protocol.md): its constants, typed frame parsers and frame builders.

The server (server_app/ws/gateway.py) and the agent (gateway_agent/) are deployed and upgraded apart; this
module is the one contract between them. Parsers take a frame's JSON text and return a typed frame, or raise
ProtocolError naming the field and the value; builders return the JSON text of one frame.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple

from .og_elements import Element, Holding
from .og_netpolicy import TargetError

VERSION = 1
MAX_MESSAGE = 1 << 20      # bytes; a larger frame breaks the protocol
CHUNK = 10000              # elements per snapshot chunk at most
HELLO_TIMEOUT = 10.0       # seconds the server waits for the first frame
HEARTBEAT_EVERY = 10.0     # seconds between heartbeats, both ways
DEAD_AFTER = 30.0          # seconds of silence after which a peer is considered dead
MAX_NAME = 128             # characters of a gateway name
MAX_NAMES = 20             # entry names kept per element from a names map
MAX_FEATURES = 32          # feature names in a hello, snapshot or delta
MAX_DOMAINS = 20000        # entries in a domains frame (each at most a few hundred bytes: under MAX_MESSAGE)
MAX_DOMAIN = 255           # characters of a domain entry's name (a DNS name, or "*." and one)
MAX_PORTS = 64             # port specs of one domain entry
MAX_LEARNED = 5000         # items of each list of a learned frame
MAX_BATCH = 128            # characters of a learned frame's batch (the spool file's name)
MAX_ANSWER_ADDRESSES = 16  # addresses of one name in a learned frame's "answers" (the newest og-dns saw)
MAX_BLOCKED = 5000         # attempts in one blocked frame (each ~150 bytes: well under MAX_MESSAGE)
MAX_CLIENTS = 5000         # client addresses in one clients frame (each ~110 bytes: well under MAX_MESSAGE)

# Frame types.
HELLO = "hello"
ACK = "ack"
HEARTBEAT = "heartbeat"
COUNTERS = "counters"
SNAPSHOT = "snapshot"
DELTA = "delta"
DOMAINS = "domains"
LEARNED = "learned"
LEARNED_ACK = "learned_ack"
BLOCKED = "blocked"
CLIENTS = "clients"
MODE = "mode"
ERROR = "error"
AGENT_FRAMES = (HELLO, ACK, HEARTBEAT, COUNTERS, LEARNED, BLOCKED, CLIENTS, ERROR)  # what an agent sends
SERVER_FRAMES = (SNAPSHOT, DELTA, DOMAINS, LEARNED_ACK, MODE, HEARTBEAT, ERROR)  # what a server sends

# Features a peer announces (hello: the agent's; snapshot and delta: the server's). A server sends a domains
# frame only to an agent that announced FEATURE_DOMAINS: an agent from before it would refuse the frame type.
FEATURE_DOMAINS = "domains"
# An agent sends learned frames (what its og-dns learned, one spool file each) only to a server that announced
# FEATURE_LEARNED; the server answers each with a learned_ack naming the batch, and the agent then deletes it.
FEATURE_LEARNED = "learned"
# An agent that announced FEATURE_DIFFERS adds `differs` to every ack sent to a server that announced it too:
# the elements its kernel lacks (missing) and holds beyond its applied set (extra), read back at that ack, the
# first MAX_DIFFERS of each named; the fleet view says what differs instead of a bare "differs".
FEATURE_DIFFERS = "differs"
MAX_DIFFERS = 100
# An agent sends blocked frames (the attempts its gateway refused, or let through in observe mode, since the
# previous frame) only to a server that announced FEATURE_BLOCKED. Fire and forget, like counters.
FEATURE_BLOCKED = "blocked"
# A server sends mode frames (enforce or observe, set through its API) only to an agent that announced FEATURE_MODE
# in its hello: an agent from before it would refuse the frame type. Such an agent keeps its configured mode.
FEATURE_MODE = "mode"
# An agent sends clients frames (the bytes and packets each client address sent and received through the gateway
# since the previous frame) only to a server that announced FEATURE_CLIENTS. Fire and forget, like counters.
FEATURE_CLIENTS = "clients"
GATEWAY_MODES = ("enforce", "observe")
BLOCKED_PROTOS = ("tcp", "udp", "sctp", "udplite", "icmp", "icmpv6", "ipv6-icmp")

# Error codes of an error frame.
BAD_MESSAGE = "bad_message"
BAD_VERSION = "bad_version"
TIMEOUT = "timeout"

# WebSocket close codes.
CLOSE_NORMAL = 1000        # the agent is stopping
CLOSE_GOING_AWAY = 1001    # the server is stopping, or the gateway fell silent: reconnect at once
CLOSE_NO_STATUS = 1005     # a close frame without a code
CLOSE_POLICY = 1008        # a frame broke this protocol: the agent keeps its backoff
CLOSE_SERVER_ERROR = 1011  # the session failed on the server's side (e.g. its database went away)


class ProtocolError(ValueError):
    """A frame that breaks the protocol: `code` goes into the error frame, `message` names field and value."""

    def __init__(self, message, code=BAD_MESSAGE):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Hello:
    """agent -> server, first frame: who the gateway is and what it applied (digest, holds: None if unsaid)."""

    TYPE: ClassVar[str] = HELLO

    name: str
    agent_version: str
    revision: int
    digest: Optional[str] = None
    holding: Optional[Holding] = None
    features: Tuple[str, ...] = ()
    mode: Optional[str] = None     # enforce or observe, what the gateway runs now (None: an agent before it)


@dataclass(frozen=True)
class Ack:
    """agent -> server: the revision applied and the digest and count read back from the kernel."""

    TYPE: ClassVar[str] = ACK

    revision: int
    digest: str
    count: int
    differs: Optional[dict] = None   # {missing: [texts], extra: [texts], missing_count, extra_count}; None: unsaid


@dataclass(frozen=True)
class Heartbeat:
    """Either way, every HEARTBEAT_EVERY seconds."""

    TYPE: ClassVar[str] = HEARTBEAT

    ts: Optional[float] = None


@dataclass
class Counters:
    """agent -> server: bytes and packets per element; the server's traffic service checks `counters` itself."""

    TYPE: ClassVar[str] = COUNTERS

    counters: dict
    boot: str = ""
    increments: bool = False
    ts: Optional[float] = None


@dataclass(frozen=True)
class Error:
    """Either way, before closing with CLOSE_POLICY: what the sender refused."""

    TYPE: ClassVar[str] = ERROR

    code: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    """server -> agent: one chunk of the whole published set, its elements parsed."""

    TYPE: ClassVar[str] = SNAPSHOT

    revision: int
    chunk: int
    chunks: int
    elements: Tuple[Element, ...]
    names: Dict[str, List[str]] = field(default_factory=dict)
    features: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Delta:
    """server -> agent: the change from revision `base` to `revision`, its elements parsed."""

    TYPE: ClassVar[str] = DELTA

    base: int
    revision: int
    add: Tuple[Element, ...]
    remove: Tuple[Element, ...]
    aged: Tuple[Element, ...] = ()
    names: Dict[str, List[str]] = field(default_factory=dict)
    features: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Domain:
    """One domain entry of a domains frame: its id, its name ("example.com" or "*.example.com"), its ports."""

    entry: int
    name: str
    ports: Tuple[str, ...] = ()

    def to_wire(self):
        return {"entry": self.entry, "name": self.name, "ports": list(self.ports)}


@dataclass(frozen=True)
class Domains:
    """server -> agent (only to an agent that announced FEATURE_DOMAINS): every domain entry at `revision`,
    for the gateway's DNS forwarder (og-dns), which the agent hands them to through its domains file."""

    TYPE: ClassVar[str] = DOMAINS

    revision: int
    domains: Tuple[Domain, ...]

    def to_file(self):
        """The domains file's content (docs/dns.md): {"revision": int, "domains": [{entry, name, ports}]}."""
        return {"revision": self.revision, "domains": [d.to_wire() for d in self.domains]}


@dataclass(frozen=True)
class LearnedItem:
    """One address og-dns learned for a domain entry: the name it answered, until `expires` (epoch s)."""

    entry: int
    name: str
    address: str
    ports: Tuple[str, ...] = ()
    ttl: int = 0
    expires: int = 0
    seen: int = 0

    def to_wire(self):
        return {"entry": self.entry, "name": self.name, "address": self.address, "ports": list(self.ports),
                "ttl": self.ttl, "expires": self.expires, "seen": self.seen}


@dataclass(frozen=True)
class Unlisted:
    """A name no entry allows, asked `count` times between `first` and `last` (epoch s)."""

    name: str
    count: int
    first: int
    last: int

    def to_wire(self):
        return {"name": self.name, "count": self.count, "first": self.first, "last": self.last}


@dataclass(frozen=True)
class Cap:
    """A cap og-dns hit: `kind` "name" (addresses of one name) or "gateway" (the learn sets), `hits` times."""

    entry: int
    name: str
    kind: str
    hits: int = 1

    def to_wire(self):
        return {"entry": self.entry, "name": self.name, "kind": self.kind, "hits": self.hits}


@dataclass(frozen=True)
class Answer:
    """A name og-dns answered with `addresses` (canonical texts, at most MAX_ANSWER_ADDRESSES), last at `last`
    (epoch s): what lets the server name the DNS name of a refused destination."""

    name: str
    addresses: Tuple[str, ...]
    last: int

    def to_wire(self):
        return {"name": self.name, "addresses": list(self.addresses), "last": self.last}


@dataclass(frozen=True)
class Learned:
    """agent -> server (only to a server that announced FEATURE_LEARNED): one spool file of og-dns, `batch` its
    file name; the server answers with a learned_ack of the same batch. `answers` is optional on the wire (a
    server from before it ignores the key, an agent from before it never sends it)."""

    TYPE: ClassVar[str] = LEARNED

    batch: str
    learned: Tuple[LearnedItem, ...] = ()
    unlisted: Tuple[Unlisted, ...] = ()
    caps: Tuple[Cap, ...] = ()
    answers: Tuple[Answer, ...] = ()


@dataclass(frozen=True)
class LearnedAck:
    """server -> agent: the learned frame of `batch` is stored; the agent deletes that spool file."""

    TYPE: ClassVar[str] = LEARNED_ACK

    batch: str


@dataclass(frozen=True)
class Attempt:
    """Attempts from `client` to `destination` `proto`/`port` since the previous blocked frame: `count` new
    connections (`bytes` their first packets' bytes), the first recorded at `first`, the last by `last` (epoch s);
    `observed`: let through by a gateway in observe mode ("would have been refused")."""

    client: str
    destination: str
    proto: str
    port: str
    count: int
    bytes: int
    first: int
    last: int
    observed: bool = False

    def to_wire(self):
        return {"client": self.client, "destination": self.destination, "proto": self.proto, "port": self.port,
                "count": self.count, "bytes": self.bytes, "first": self.first, "last": self.last,
                "observed": self.observed}


@dataclass(frozen=True)
class Blocked:
    """agent -> server (only to a server that announced FEATURE_BLOCKED): refused (or observed) attempts."""

    TYPE: ClassVar[str] = BLOCKED

    attempts: Tuple[Attempt, ...]
    mode: str = "enforce"


@dataclass(frozen=True)
class ClientUse:
    """What one client address sent (out) and received (in) through the gateway since the previous frame."""

    client: str
    out_bytes: int = 0
    out_packets: int = 0
    in_bytes: int = 0
    in_packets: int = 0

    FIELDS: ClassVar[Tuple[str, ...]] = ("out_bytes", "out_packets", "in_bytes", "in_packets")

    def to_wire(self):
        return {"client": self.client, "out_bytes": self.out_bytes, "out_packets": self.out_packets,
                "in_bytes": self.in_bytes, "in_packets": self.in_packets}


@dataclass(frozen=True)
class Clients:
    """agent -> server (only to a server that announced FEATURE_CLIENTS): traffic per client address; `full`: a
    per-client set of the gateway was full, so clients beyond it were not counted."""

    TYPE: ClassVar[str] = CLIENTS

    clients: Tuple[ClientUse, ...]
    full: bool = False
    ts: Optional[float] = None


@dataclass(frozen=True)
class Mode:
    """server -> agent (only to an agent that announced FEATURE_MODE): enforce or observe."""

    TYPE: ClassVar[str] = MODE

    mode: str


# ---- parsing ------------------------------------------------------------------------------------------------
def decode(raw, types, speaker):
    """A frame's JSON object after the checks every frame passes (text, size, JSON, version, one of `types`)."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("binary frame of %d bytes: frames must be JSON text" % len(raw))
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE:
        raise ProtocolError("frame of %d bytes is larger than the %d-byte limit" % (size, MAX_MESSAGE))
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ProtocolError("frame is not valid JSON: %r" % raw[:80]) from None
    if not isinstance(msg, dict):
        raise ProtocolError("frame must be a JSON object, not %s" % type(msg).__name__)
    if msg.get("v") != VERSION:
        raise ProtocolError("protocol version %r is not supported; this %s speaks v%d"
                            % (msg.get("v"), speaker, VERSION), BAD_VERSION)
    if msg.get("type") not in types:
        raise ProtocolError("unknown message type %r" % (msg.get("type"),))
    return msg


def _int(msg, key):
    """A non-negative integer field."""
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("%s %s must be a non-negative integer, not %r" % (msg["type"], key, value))
    return value


def _digest(msg, required=True):
    """A 64-character lowercase SHA-256 hex digest field (None when absent and not required)."""
    value = msg.get("digest")
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) != 64 or set(value) - set("0123456789abcdef"):
        raise ProtocolError("%s digest must be a 64-character lowercase SHA-256 hex string, not %r"
                            % (msg["type"], value if not isinstance(value, str) else value[:80]))
    return value


def _elements(msg, key, optional=False):
    """A list of element texts, parsed."""
    if optional and key not in msg:
        return ()
    value = msg.get(key)
    if not isinstance(value, list):
        raise ProtocolError("%s %s must be a list of elements, not %s" % (msg["type"], key, type(value).__name__))
    try:
        return tuple(Element.parse(e) for e in value)
    except TargetError as exc:
        raise ProtocolError("%s %s: %s" % (msg["type"], key, exc)) from None


def _names(msg):
    """The optional names map {element: [entry name, ...]}; malformed parts dropped (labels only)."""
    value = msg.get("names")
    if not isinstance(value, dict):
        return {}
    return {k: [t for t in v if isinstance(t, str)][:MAX_NAMES] for k, v in value.items()
            if isinstance(k, str) and isinstance(v, list)}


def _features(msg):
    """The optional features list: strings naming what the sender speaks beyond the base protocol."""
    if "features" not in msg:
        return ()
    value = msg["features"]
    if (not isinstance(value, list) or len(value) > MAX_FEATURES
            or not all(isinstance(f, str) and 0 < len(f) <= 64 for f in value)):
        raise ProtocolError("%s features must be a list of at most %d feature names (strings of 1-64 characters) "
                            "such as [\"domains\"], not %r" % (msg["type"], MAX_FEATURES, value))
    return tuple(dict.fromkeys(value))


def _domains(msg):
    """A domains frame's list of {entry, name, ports}, each checked."""
    value = msg.get("domains")
    if not isinstance(value, list) or len(value) > MAX_DOMAINS:
        raise ProtocolError("domains domains must be a list of at most %d {entry, name, ports} objects, not %r"
                            % (MAX_DOMAINS, value if not isinstance(value, list) else "%d items" % len(value)))
    result, seen = [], set()
    for item in value:
        if not isinstance(item, dict):
            raise ProtocolError("domains domains item must be an object {entry, name, ports}, not %r" % (item,))
        entry = item.get("entry")
        if not isinstance(entry, int) or isinstance(entry, bool) or entry < 1:
            raise ProtocolError("domains entry must be a positive integer entry id, not %r" % (entry,))
        if entry in seen:
            raise ProtocolError("domains entry %d is listed twice" % entry)
        seen.add(entry)
        name = item.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_DOMAIN or name != name.strip():
            raise ProtocolError("domains name of entry %d must be a domain name of 1-%d characters such as "
                                "\"example.com\" or \"*.example.com\", not %r"
                                % (entry, MAX_DOMAIN, name if not isinstance(name, str) else name[:260]))
        ports = item.get("ports", [])
        if (not isinstance(ports, list) or len(ports) > MAX_PORTS
                or not all(isinstance(p, str) and 0 < len(p) <= 32 for p in ports)):
            raise ProtocolError("domains ports of entry %d must be a list of port specs such as [\"443/tcp\"], "
                                "not %r" % (entry, ports))
        result.append(Domain(entry, name, tuple(ports)))
    return tuple(result)


def _batch(msg):
    value = msg.get("batch")
    if (not isinstance(value, str) or not 0 < len(value) <= MAX_BATCH or "/" in value or value.startswith(".")
            or value != value.strip()):
        raise ProtocolError("%s batch must be a spool file name of 1-%d characters without \"/\" or a leading "
                            "\".\", such as \"learned-1767225600000-812-3.json\", not %r"
                            % (msg["type"], MAX_BATCH, value if not isinstance(value, str) else value[:140]))
    return value


def _epoch(kind, key, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("learned %s %s must be a non-negative integer (epoch seconds), not %r"
                            % (kind, key, value))
    return value


def _list(msg, key):
    value = msg.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_LEARNED:
        raise ProtocolError("learned %s must be a list of at most %d objects, not %r"
                            % (key, MAX_LEARNED, value if not isinstance(value, list) else "%d items" % len(value)))
    for item in value:
        if not isinstance(item, dict):
            raise ProtocolError("learned %s item must be an object, not %r" % (key, item))
    return value


def _dname(kind, value):
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DOMAIN or value != value.strip():
        raise ProtocolError("learned %s name must be a domain name of 1-%d characters such as \"example.com\", "
                            "not %r" % (kind, MAX_DOMAIN, value if not isinstance(value, str) else value[:260]))
    return value


def _entry_id(kind, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ProtocolError("learned %s entry must be a positive integer entry id, not %r" % (kind, value))
    return value


def _learned(msg):
    """A learned frame's three lists, each item checked (addresses are checked by the server's rules)."""
    items = []
    for item in _list(msg, "learned"):
        address = item.get("address")
        if not isinstance(address, str) or not 0 < len(address) <= 64:
            raise ProtocolError("learned learned address must be an IP address such as \"203.0.113.7\", not %r"
                                % (address,))
        ports = item.get("ports", [])
        if (not isinstance(ports, list) or len(ports) > MAX_PORTS
                or not all(isinstance(p, str) and 0 < len(p) <= 32 for p in ports)):
            raise ProtocolError("learned learned ports must be a list of port specs such as [\"443/tcp\"], not %r"
                                % (ports,))
        items.append(LearnedItem(_entry_id("learned", item.get("entry")), _dname("learned", item.get("name")),
                                 address, tuple(ports), _epoch("learned", "ttl", item.get("ttl", 0)),
                                 _epoch("learned", "expires", item.get("expires")),
                                 _epoch("learned", "seen", item.get("seen", 0))))
    unlisted = []
    for item in _list(msg, "unlisted"):
        count = item.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ProtocolError("learned unlisted count must be a positive integer, not %r" % (count,))
        unlisted.append(Unlisted(_dname("unlisted", item.get("name")), count,
                                 _epoch("unlisted", "first", item.get("first")),
                                 _epoch("unlisted", "last", item.get("last"))))
    caps = []
    for item in _list(msg, "caps"):
        kind = item.get("kind")
        if kind not in ("name", "gateway"):
            raise ProtocolError("learned caps kind must be \"name\" or \"gateway\", not %r" % (kind,))
        hits = item.get("hits", 1)
        if not isinstance(hits, int) or isinstance(hits, bool) or hits < 1:
            raise ProtocolError("learned caps hits must be a positive integer, not %r" % (hits,))
        caps.append(Cap(_entry_id("caps", item.get("entry")), _dname("caps", item.get("name")), kind, hits))
    return Learned(_batch(msg), tuple(items), tuple(unlisted), tuple(caps), _answers(msg))


def _answers(msg):
    """The learned frame's optional answers: each a name, 1-MAX_ANSWER_ADDRESSES IP addresses (canonical) and
    its last answer's time."""
    answers = []
    for item in _list(msg, "answers"):
        addresses = item.get("addresses")
        if not isinstance(addresses, list) or not 0 < len(addresses) <= MAX_ANSWER_ADDRESSES:
            raise ProtocolError("learned answers addresses must be a list of 1-%d IP addresses such as "
                                "[\"203.0.113.7\"], not %r" % (MAX_ANSWER_ADDRESSES, addresses))
        canonical = []
        for address in addresses:
            try:
                canonical.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise ProtocolError("learned answers address must be an IP address such as \"203.0.113.7\", "
                                    "not %r" % (address,)) from None
        answers.append(Answer(_dname("answers", item.get("name")), tuple(canonical),
                              _epoch("answers", "last", item.get("last"))))
    return tuple(answers)


def _differs(msg):
    """The ack's optional differs object, its element texts canonical; None when absent."""
    if "differs" not in msg:
        return None
    value = msg["differs"]
    if not isinstance(value, dict) or set(value) != {"missing", "extra", "missing_count", "extra_count"}:
        raise ProtocolError("ack differs must be an object of missing, extra, missing_count and extra_count, not %r"
                            % (str(value)[:200],))
    result = {}
    for key in ("missing", "extra"):
        texts, count = value[key], value[key + "_count"]
        if not isinstance(texts, list) or len(texts) > MAX_DIFFERS:
            raise ProtocolError("ack differs %s must be a list of at most %d elements" % (key, MAX_DIFFERS))
        if not isinstance(count, int) or isinstance(count, bool) or count < len(texts):
            raise ProtocolError("ack differs %s_count must be a whole number of at least the %d elements named, "
                                "not %r" % (key, len(texts), count))
        try:
            result[key] = sorted(Element.parse(t).text for t in texts)
        except TargetError as exc:
            raise ProtocolError("ack differs %s: %s" % (key, exc)) from None
        result[key + "_count"] = count
    return result


def _mode(msg):
    value = msg.get("mode")
    if value not in GATEWAY_MODES:
        raise ProtocolError("%s mode must be one of %s, not %r" % (msg["type"], ", ".join(GATEWAY_MODES), value))
    return value


def _blocked(msg):
    """A blocked frame's attempts, each checked (addresses as text: the server's rules check them)."""
    value = msg.get("attempts")
    if not isinstance(value, list) or len(value) > MAX_BLOCKED:
        raise ProtocolError("blocked attempts must be a list of at most %d objects, not %r"
                            % (MAX_BLOCKED, value if not isinstance(value, list) else "%d items" % len(value)))
    attempts = []
    for item in value:
        if not isinstance(item, dict):
            raise ProtocolError("blocked attempts item must be an object, not %r" % (item,))
        for key in ("client", "destination"):
            address = item.get(key)
            if not isinstance(address, str) or not 0 < len(address) <= 64:
                raise ProtocolError("blocked %s must be an IP address such as \"198.51.100.20\", not %r"
                                    % (key, address))
        proto = item.get("proto")
        if proto not in BLOCKED_PROTOS and not (isinstance(proto, str) and proto.isdigit() and len(proto) <= 3):
            raise ProtocolError("blocked proto must be one of %s or a protocol number, not %r"
                                % (", ".join(BLOCKED_PROTOS), proto))
        port = item.get("port")
        if not isinstance(port, str) or not 0 < len(port) <= 32:
            raise ProtocolError("blocked port must be a text of 1-32 characters such as \"443\", not %r" % (port,))
        count = item.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ProtocolError("blocked count must be a positive integer, not %r" % (count,))
        numbers = []
        for key in ("bytes", "first", "last"):
            number = item.get(key, 0)
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise ProtocolError("blocked %s must be a non-negative integer%s, not %r"
                                    % (key, "" if key == "bytes" else " (epoch seconds)", number))
            numbers.append(number)
        observed = item.get("observed", False)
        if not isinstance(observed, bool):
            raise ProtocolError("blocked observed must be true or false, not %r" % (observed,))
        attempts.append(Attempt(item["client"], item["destination"], proto, port, count, *numbers, observed))
    return Blocked(tuple(attempts), _mode(msg) if "mode" in msg else "enforce")


def _clients(msg):
    """A clients frame's items, each checked (addresses as text: the server's rules check them)."""
    value = msg.get("clients")
    if not isinstance(value, list) or len(value) > MAX_CLIENTS:
        raise ProtocolError("clients clients must be a list of at most %d objects, not %r"
                            % (MAX_CLIENTS, value if not isinstance(value, list) else "%d items" % len(value)))
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise ProtocolError("clients clients item must be an object, not %r" % (item,))
        address = item.get("client")
        if not isinstance(address, str) or not 0 < len(address) <= 64:
            raise ProtocolError("clients client must be an IP address such as \"10.88.0.2\", not %r" % (address,))
        numbers = []
        for key in ClientUse.FIELDS:
            number = item.get(key, 0)
            if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 1 << 62:
                raise ProtocolError("clients %s of %s must be a whole number within 0-2^62, not %r"
                                    % (key, address, number))
            numbers.append(number)
        items.append(ClientUse(address, *numbers))
    full = msg.get("full", False)
    if not isinstance(full, bool):
        raise ProtocolError("clients full must be true or false, not %r" % (full,))
    ts = msg.get("ts")
    if ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool)):
        raise ProtocolError("clients ts must be a number (epoch seconds), not %r" % (ts,))
    return Clients(tuple(items), full, ts)


def _error(msg):
    return Error(str(msg.get("code")), str(msg.get("message"))[:500])


def parse_agent_frame(raw):
    """A frame the server received (hello, ack, heartbeat, counters, learned, error) as its typed frame."""
    msg = decode(raw, AGENT_FRAMES, "server")
    kind = msg["type"]
    if kind == HELLO:
        name = msg.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ProtocolError("hello name must be a string of 1-%d characters, not %r"
                                % (MAX_NAME, name if not isinstance(name, str) else name[:140]))
        holding = None
        if "holds" in msg:
            try:
                holding = Holding.from_wire(msg["holds"])
            except TargetError as exc:
                raise ProtocolError("hello %s" % exc) from None
        return Hello(name, str(msg.get("agent_version", ""))[:32], _int(msg, "revision"),
                     _digest(msg, required=False), holding, _features(msg), _mode(msg) if "mode" in msg else None)
    if kind == ACK:
        return Ack(_int(msg, "revision"), _digest(msg), _int(msg, "count"), _differs(msg))
    if kind == HEARTBEAT:
        return Heartbeat(msg.get("ts"))
    if kind == COUNTERS:
        return Counters(msg.get("counters"), str(msg.get("boot", "")), msg.get("increments") is True,
                        msg.get("ts"))
    if kind == LEARNED:
        return _learned(msg)
    if kind == BLOCKED:
        return _blocked(msg)
    if kind == CLIENTS:
        return _clients(msg)
    return _error(msg)


def parse_server_frame(raw):
    """A frame the agent received (snapshot, delta, domains, learned_ack, heartbeat, error) as its typed frame, elements parsed."""
    msg = decode(raw, SERVER_FRAMES, "agent")
    kind = msg["type"]
    if kind == SNAPSHOT:
        revision, chunk, chunks = _int(msg, "revision"), _int(msg, "chunk"), _int(msg, "chunks")
        if not chunk < chunks:
            raise ProtocolError("snapshot chunk %d of %d is out of range" % (chunk, chunks))
        return Snapshot(revision, chunk, chunks, _elements(msg, "elements"), _names(msg), _features(msg))
    if kind == DELTA:
        base, revision = _int(msg, "base"), _int(msg, "revision")
        if revision < base:
            raise ProtocolError("delta revision %d is below its base %d" % (revision, base))
        add, remove = _elements(msg, "add"), _elements(msg, "remove")
        aged = _elements(msg, "aged", optional=True)
        if not set(aged) <= set(remove):
            raise ProtocolError("delta aged lists elements that are not in its remove list: %s"
                                % " ".join(sorted(e.text for e in set(aged) - set(remove))[:10]))
        return Delta(base, revision, add, remove, aged, _names(msg), _features(msg))
    if kind == DOMAINS:
        return Domains(_int(msg, "revision"), _domains(msg))
    if kind == LEARNED_ACK:
        return LearnedAck(_batch(msg))
    if kind == MODE:
        return Mode(_mode(msg))
    if kind == HEARTBEAT:
        return Heartbeat(msg.get("ts"))
    return _error(msg)


# ---- building -----------------------------------------------------------------------------------------------
def encode(kind, **fields):
    """The JSON text of one frame of type `kind` (compact; `v` last, as every frame has carried it)."""
    msg = {"type": kind}
    msg.update(fields)
    msg["v"] = VERSION
    return json.dumps(msg, separators=(",", ":"))


def hello(name, agent_version, revision, digest, holding=None, features=(), mode=None):
    """The agent's hello; `holding` (an og_elements.Holding) says what it holds of the published set, `features`
    what it speaks beyond the base protocol (FEATURE_DOMAINS: send it domains frames), `mode` what it runs."""
    fields = {"name": name, "agent_version": agent_version, "revision": revision, "digest": digest}
    if mode is not None:
        fields["mode"] = _mode({"type": HELLO, "mode": mode})
    if holding is not None:
        fields["holds"] = holding.to_wire()
    if features:
        fields["features"] = list(features)
    return encode(HELLO, **fields)


def ack(revision, digest, count, differs=None):
    """The agent's ack; `differs` (only to a server that announced FEATURE_DIFFERS) is a pair of sets of element
    texts (missing from the kernel, extra in it), named up to MAX_DIFFERS each."""
    fields = {}
    if differs is not None:
        missing, extra = differs
        fields["differs"] = {"missing": sorted(missing)[:MAX_DIFFERS], "extra": sorted(extra)[:MAX_DIFFERS],
                             "missing_count": len(missing), "extra_count": len(extra)}
    return encode(ACK, revision=revision, digest=digest, count=count, **fields)


def heartbeat(ts):
    return encode(HEARTBEAT, ts=ts)


def counters(ts, boot, values, increments=True):
    """A counters frame: `values` {element text: {out_bytes, out_packets, in_bytes, in_packets}}."""
    return encode(COUNTERS, ts=ts, boot=boot, increments=increments, counters=values)


def error(code, message):
    return encode(ERROR, code=code, message=message[:500])


def delta(base, revision, add, remove, aged=(), names=None, features=()):
    """A delta frame; element lists are canonical texts, `names` {element: [entry name, ...]}, `features` what
    the server speaks beyond the base protocol."""
    fields = {"features": list(features)} if features else {}
    return encode(DELTA, base=base, revision=revision, add=list(add), remove=list(remove), aged=list(aged),
                  names=names or {}, **fields)


def snapshot(revision, elements, names=None, features=()):
    """The chunks of a snapshot of `elements` (canonical texts, in order), each chunk's frame as JSON text."""
    names = names or {}
    chunks = max(1, -(-len(elements) // CHUNK))
    frames = []
    fields = {"features": list(features)} if features else {}
    for i in range(chunks):
        part = elements[i * CHUNK:(i + 1) * CHUNK]
        frames.append(encode(SNAPSHOT, revision=revision, chunk=i, chunks=chunks, elements=list(part),
                             names={e: names[e] for e in part if e in names}, **fields))
    return frames


def domains(revision, items):
    """A domains frame: `items` an iterable of Domain, or of {"entry", "name", "ports"} dicts (checked by the
    same rules the parser applies, so a server never sends what an agent would refuse)."""
    wire = [d.to_wire() if isinstance(d, Domain)
            else {"entry": d["entry"], "name": d["name"], "ports": list(d.get("ports") or [])} for d in items]
    msg = {"type": DOMAINS, "revision": revision, "domains": wire}
    _int(msg, "revision")
    _domains(msg)
    return encode(DOMAINS, revision=revision, domains=wire)


def learned(batch, spool):
    """A learned frame of one og-dns spool file: `batch` its file name, `spool` its parsed JSON (docs/dns.md);
    checked by the rules the parser applies, so an agent never sends what a server would refuse."""
    fields = {"batch": batch, "learned": list(spool.get("learned") or []),
              "unlisted": list(spool.get("unlisted") or []), "caps": list(spool.get("caps") or [])}
    if spool.get("answers"):
        fields["answers"] = list(spool["answers"])
    text = encode(LEARNED, **fields)
    _learned(dict(fields, type=LEARNED))
    if len(text.encode("utf-8")) > MAX_MESSAGE:
        raise ProtocolError("learned frame of spool file %s is %d bytes, over the %d-byte limit; og-dns writes "
                            "smaller files (docs/dns.md, \"Spool\")" % (batch, len(text.encode("utf-8")), MAX_MESSAGE))
    return text


def learned_ack(batch):
    """The server's answer to the learned frame of `batch`: stored, the agent may delete its spool file."""
    _batch({"type": LEARNED_ACK, "batch": batch})
    return encode(LEARNED_ACK, batch=batch)


def blocked(attempts, mode="enforce"):
    """The blocked frames of `attempts` (Attempt or their wire dicts), MAX_BLOCKED to a frame; each checked by the
    rules the parser applies, so an agent never sends what a server would refuse."""
    wire = [a.to_wire() if isinstance(a, Attempt) else dict(a) for a in attempts]
    frames = []
    for start in range(0, len(wire), MAX_BLOCKED):
        part = wire[start:start + MAX_BLOCKED]
        _blocked({"type": BLOCKED, "attempts": part, "mode": mode})
        frames.append(encode(BLOCKED, mode=mode, attempts=part))
    return frames


def clients(ts, items, full=False):
    """The clients frames of `items` (ClientUse or their wire dicts), MAX_CLIENTS to a frame (at least one, so
    `full` is said even when nothing was counted); each checked by the rules the parser applies."""
    wire = [c.to_wire() if isinstance(c, ClientUse) else dict(c) for c in items]
    frames = []
    for start in range(0, max(1, len(wire)), MAX_CLIENTS):
        part = wire[start:start + MAX_CLIENTS]
        _clients({"type": CLIENTS, "ts": ts, "clients": part, "full": full})
        frames.append(encode(CLIENTS, ts=ts, full=full, clients=part))
    return frames


def mode(value):
    """The server's mode frame: the gateway enforces or observes."""
    _mode({"type": MODE, "mode": value})
    return encode(MODE, mode=value)
