"""API and gateway tokens: random secrets shown once, stored as SHA-256, each with one role."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from ..models import Token, db, utcnow

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


def create(role, name):
    """Make a new token; return (Token, secret). The secret is not stored."""
    if role not in ROLES:
        raise ValueError("role %r must be one of %s" % (role, ", ".join(ROLES)))
    secret = "og%s_%s" % (role[0], secrets.token_urlsafe(32))
    token = Token(name=name, role=role, token_hash=hash_token(secret))
    db.session.add(token)
    db.session.commit()
    return token, secret


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
