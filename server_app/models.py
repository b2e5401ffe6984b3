"""The server's tables (SQLAlchemy 2.0, typed)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Entry(db.Model):
    """An operator's allowlist entry: a domain, an address or a CIDR, optionally port-scoped."""

    __tablename__ = "entries"
    # sqlite_autoincrement: ids are never reused (migration 0002); other databases' sequences never reuse them.
    __table_args__ = (UniqueConstraint("target", "ports_key", name="uq_entry_target_ports"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # ip, cidr, domain
    ports: Mapped[list] = mapped_column(JSON, default=list)
    ports_key: Mapped[str] = mapped_column(String(255), default="")
    deletable: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Domains: the resolver's bookkeeping (docs/resolver.md).
    grace_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    next_resolve_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    resolve_error: Mapped[str] = mapped_column(Text, default="")
    capped: Mapped[bool] = mapped_column(Boolean, default=False)

    addresses: Mapped[list["EntryAddress"]] = relationship(
        back_populates="entry", cascade="all, delete-orphan", order_by="EntryAddress.address")

    @property
    def wildcard(self):
        """A wildcard domain ('*.example.com'): the target keeps its star, so no column is needed. Learned
        through the gateways' DNS forwarder only; the central resolver never resolves it."""
        return self.kind == "domain" and self.target.startswith("*.")


class EntryAddress(db.Model):
    """An address an entry currently contributes, and where it came from (typed, resolved or learned)."""

    __tablename__ = "entry_addresses"
    __table_args__ = (UniqueConstraint("entry_id", "address", name="uq_entry_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)  # a network in CIDR notation
    source: Mapped[str] = mapped_column(String(16), default="typed")
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # A resolved address no longer returned by DNS stays until this time (None: currently returned).
    grace_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Non-empty: the address is recorded but never published (e.g. it lies in an internal network).
    refused: Mapped[str] = mapped_column(String(255), default="")
    # Source "learned": the gateway whose DNS forwarder learned the address (services/learned.py), else "".
    learned_via: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # Source "learned": when the learned answer ends; housekeeping removes the row then.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)

    entry: Mapped[Entry] = relationship(back_populates="addresses")


class EntryElement(db.Model):
    """The elements (docs/protocol.md) an entry produces; the published set is their union."""

    __tablename__ = "entry_elements"
    __table_args__ = (UniqueConstraint("entry_id", "element", name="uq_entry_element"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    element: Mapped[str] = mapped_column(String(96), index=True)


class LogHead(db.Model):
    """One row: the latest revision. Updating it serialises writers, so revisions commit in order."""

    __tablename__ = "log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class Change(db.Model):
    """One element added to or removed from the published set at a revision."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_revision", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(8))  # add, remove
    element: Mapped[str] = mapped_column(String(96))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Token(db.Model):
    """An API or gateway token; only its SHA-256 is stored."""

    __tablename__ = "tokens"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class User(db.Model):
    """An operator who logs into the UI; the password is stored as a KDF hash (werkzeug: scrypt)."""

    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # viewer, editor, admin
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEvent(db.Model):
    """Append-only: who did what, when, from where, with the object before and after."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), index=True)       # token name, user name or "system"
    actor_kind: Mapped[str] = mapped_column(String(16))               # token, user, system
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(32), index=True)       # entry.create, entry.delete, ...
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    revision: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Migration 0009: what the event concerns by name (an entry's target, a user or token name, or the value a
    # refused request named), "done" or "refused", and a refusal's reason as the actor saw it.
    target: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="done", server_default="done")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class TrafficSample(db.Model):
    """Bytes and packets per gateway and element in one minute, as reported by the agents."""

    __tablename__ = "traffic_samples"
    __table_args__ = (UniqueConstraint("gateway", "element", "minute", name="uq_traffic_minute"),
                      Index("ix_traffic_minute", "minute"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128))
    element: Mapped[str] = mapped_column(String(96), index=True)
    minute: Mapped[dt.datetime] = mapped_column(DateTime)
    out_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    in_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    out_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    in_packets: Mapped[int] = mapped_column(BigInteger, default=0)


class EntryTraffic(db.Model):
    """Bytes and packets of one entry's elements per gateway and minute, attributed when the server took them in.

    Recorded apart from the entry (entry_id is no foreign key, the entry's name is kept), so the traffic of a
    deleted or expired entry stays its own. shared: the element was produced by several entries at the time;
    each of them has these bytes, which TrafficSample (per element) counts once.
    """

    __tablename__ = "entry_traffic"
    __table_args__ = (UniqueConstraint("entry_id", "gateway", "minute", "shared", name="uq_entry_traffic_minute"),
                      Index("ix_entry_traffic_minute", "minute"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(Integer, index=True)
    entry: Mapped[str] = mapped_column(String(255))   # the entry as entries.describe() names it
    gateway: Mapped[str] = mapped_column(String(128))
    minute: Mapped[dt.datetime] = mapped_column(DateTime)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    out_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    in_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    out_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    in_packets: Mapped[int] = mapped_column(BigInteger, default=0)


class ClientTraffic(db.Model):
    """Bytes and packets of one client address per gateway and minute, as reported by the agents (clients frames).

    out = what the client sent through the gateway, in = what it received; only traffic the gateway let through.
    """

    __tablename__ = "client_traffic"
    __table_args__ = (UniqueConstraint("gateway", "client", "minute", name="uq_client_traffic_minute"),
                      Index("ix_client_traffic_minute", "minute"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128))
    client: Mapped[str] = mapped_column(String(64), index=True)   # canonical address text ('10.88.0.2')
    minute: Mapped[dt.datetime] = mapped_column(DateTime)
    out_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    in_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    out_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    in_packets: Mapped[int] = mapped_column(BigInteger, default=0)


class Lease(db.Model):
    """A named lease (the resolver's): one replica holds it until `until`."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    until: Mapped[dt.datetime] = mapped_column(DateTime)


class Gateway(db.Model):
    """What the server knows of one gateway agent."""

    __tablename__ = "gateways"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    address: Mapped[str] = mapped_column(String(64), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    applied_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    digest: Mapped[str] = mapped_column(String(64), default="")
    digest_match: Mapped[bool] = mapped_column(Boolean, default=False)
    elements: Mapped[int] = mapped_column(Integer, default=0)
    # What the agent said it holds (docs/protocol.md, "holds"), as JSON; "" for agents that do not say.
    holds: Mapped[str] = mapped_column(Text, default="")
    # What its kernel lacked or held beyond its applied set at its last ack (og_protocol.FEATURE_DIFFERS), as
    # JSON; "" when its agent does not say.
    kernel_diff: Mapped[str] = mapped_column(Text, default="", server_default="")
    connected_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # The replica (its replica_name) holding the gateway's session, and that session's id (services/gateways.py).
    session_replica: Mapped[str] = mapped_column(String(128), default="", server_default="")
    session_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # enforce or observe as set through the API (PUT /api/v1/gateways/NAME/mode); "" = the agent's own setting.
    mode: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # What the agent said it runs: its hello's mode, then each mode frame it was sent; "" when it never said.
    running_mode: Mapped[str] = mapped_column(String(16), default="", server_default="")


class BlockedAttempt(db.Model):
    """New connections a gateway refused (or let through in observe mode: `observed`) from one client address to
    one destination, protocol and port, summed over the blocked frames of its agent (services/blocked.py)."""

    __tablename__ = "blocked_attempts"
    __table_args__ = (UniqueConstraint("gateway", "client", "destination", "proto", "port", "observed",
                                       name="uq_blocked_attempt"),
                      Index("ix_blocked_last_seen", "last_seen"),
                      # The page lists refused and observed apart, newest or busiest first: one index each (the
                      # busiest's carries its whole ordering, count then last_seen then id: migration 0013).
                      Index("ix_blocked_observed_last_seen", "observed", "last_seen"),
                      Index("ix_blocked_observed_count_last_seen", "observed", "count", "last_seen", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    proto: Mapped[str] = mapped_column(String(16))
    port: Mapped[str] = mapped_column(String(32))
    observed: Mapped[bool] = mapped_column(Boolean, default=False)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime)


class DnsAnswer(db.Model):
    """A name one gateway's DNS forwarder answered with an address (og-dns's spool, the learned frame's "answers"):
    first and last seen. It names a blocked attempt's destination (services/answers.py); bounded by
    dns_answers_max_rows (the oldest last_seen dropped first) and dns_answers_retention_days."""

    __tablename__ = "dns_answers"
    # The unique key's prefix (gateway, address) is the Blocked rows' lookup: an index seek per row of a page.
    __table_args__ = (UniqueConstraint("gateway", "address", "name", name="uq_dns_answer"),
                      # The housekeeper's retention and its cut at the cap walk this index.
                      Index("ix_dns_answers_last_seen", "last_seen", "id"),
                      Index("ix_dns_answers_name", "name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime)


class UnlistedName(db.Model):
    """A name no entry allows that clients of one gateway asked its DNS forwarder for (og-dns's spool, the
    learned frame's "unlisted"): how often, first and last seen. Bounded by dns_unlisted_max_rows (the
    oldest last_seen dropped first) and dns_unlisted_retention_days (services/unlisted.py)."""

    __tablename__ = "dns_unlisted"
    __table_args__ = (UniqueConstraint("gateway", "name", name="uq_dns_unlisted_name"),
                      # The API's newest-first order and the housekeeper's cut at the cap walk this index.
                      Index("ix_dns_unlisted_last_seen", "last_seen", "id"),
                      Index("ix_dns_unlisted_count", "count"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime)


class UnlistedBatch(db.Model):
    """The newest learned frames (batches) of each gateway whose unlisted counts were added: a frame sent again
    because its ack was lost adds nothing a second time. services/unlisted.py keeps KEEP_BATCHES per gateway."""

    __tablename__ = "dns_unlisted_batches"
    __table_args__ = (UniqueConstraint("gateway", "batch", name="uq_dns_unlisted_batch"),
                      Index("ix_dns_unlisted_batches_gateway_id", "gateway", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(128))
    batch: Mapped[str] = mapped_column(String(128))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
