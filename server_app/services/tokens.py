"""API and gateway tokens: random secrets shown once, stored as SHA-256, each with one role."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from ..extensions import db
from ..models import Token, utcnow
from . import audit

ROLES = ("viewer", "editor", "admin", "gateway")
# Which roles may do what; a gateway token may do nothing on the API.
GRANTS = {
    "read": {"viewer", "editor", "admin"},
    "write": {"editor", "admin"},
    "admin": {"admin"},
    "gateway": {"gateway"},
}
MIN_LENGTH = 20


def hash_token(value):
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def create(role, name, created_by="cli"):
    """Make a new token; return (Token, secret). The secret is not stored."""
    if role not in ROLES:
        raise ValueError("role %r must be one of %s" % (role, ", ".join(ROLES)))
    secret = "og%s_%s" % (role[0], secrets.token_urlsafe(32))
    token = Token(name=name, role=role, token_hash=hash_token(secret), created_by=created_by)
    db.session.add(token)
    db.session.flush()
    audit.record("token.create", "token", token.id, "created %s token %s" % (role, name), after=to_json(token))
    db.session.commit()
    return token, secret


def by_name(name):
    return db.session.execute(select(Token).where(Token.name == name)).scalar()


def all_tokens():
    return list(db.session.execute(select(Token).order_by(Token.id)).scalars())


def revoke(token_id):
    """Revoke a token (kept for the record); None if it doesn't exist."""
    token = db.session.get(Token, token_id)
    if token is None:
        return None
    if not token.revoked:
        before = to_json(token)
        token.revoked, token.revoked_at = True, utcnow()
        audit.record("token.revoke", "token", token.id, "revoked %s token %s" % (token.role, token.name),
                     before=before, after=to_json(token))
        db.session.commit()
    return token


def to_json(token):
    def iso(value):
        return value.isoformat() + "Z" if value else None
    return {"id": token.id, "name": token.name, "role": token.role, "created_at": iso(token.created_at),
            "created_by": token.created_by or "", "last_used": iso(token.last_used), "revoked": bool(token.revoked),
            "revoked_at": iso(token.revoked_at)}


def ensure(role, name, secret):
    """Register a given secret under name and role; return 'created', 'updated' or 'unchanged'."""
    if role not in ROLES:
        raise ValueError("role %r must be one of %s" % (role, ", ".join(ROLES)))
    if len(secret) < MIN_LENGTH:
        raise ValueError("a token must have at least %d characters" % MIN_LENGTH)
    token = db.session.execute(select(Token).where(Token.name == name)).scalar()
    wanted = hash_token(secret)
    if token is None:
        db.session.add(Token(name=name, role=role, token_hash=wanted))
        db.session.commit()
        return "created"
    if (token.role, token.token_hash, token.revoked) == (role, wanted, False):
        return "unchanged"
    token.role, token.token_hash, token.revoked = role, wanted, False
    db.session.commit()
    return "updated"


def authenticate(header):
    """The Token for an 'Authorization: Bearer ...' header value, or None."""
    if not header or not header.startswith("Bearer "):
        return None
    value = header[7:].strip()
    if len(value) < MIN_LENGTH:
        return None
    token = db.session.execute(select(Token).where(Token.token_hash == hash_token(value))).scalar()
    if token is None or token.revoked:
        return None
    now = utcnow()
    if token.last_used is None or (now - token.last_used).total_seconds() > 60:
        token.last_used = now
        db.session.commit()
    return token


def allowed(token, action):
    return token is not None and token.role in GRANTS[action]
