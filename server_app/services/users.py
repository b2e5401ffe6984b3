"""UI users: passwords as werkzeug KDF hashes (scrypt), roles like tokens', and throttled logins.

Failed logins are limited twice: per account in the database (after `login_max_failures` consecutive failures
the account is locked for `login_lockout` seconds, on every replica) and per client address in memory (at most
`login_max_failures * 4` failures in `login_lockout` seconds), so one address cannot try many accounts and many
addresses cannot keep trying one. A locked account refuses even the right password until the lock ends.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import threading
import time

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import RequestError
from ..extensions import db
from ..models import User, utcnow
from . import audit

ROLES = ("viewer", "editor", "admin")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
# Checked against when the user does not exist, so that the answer takes as long as for a real account.
_DUMMY_HASH = generate_password_hash("not a password of anyone")


class UserError(RequestError):
    """A refused user operation: status, code and a message naming the value and the fix."""


def validate(username, password, role):
    if not isinstance(username, str) or not USERNAME.match(username):
        raise UserError(400, "invalid_username", "username %r must be 1-64 letters, digits or . _ @ - (starting with "
                        "a letter or digit)" % (username,))
    if role not in ROLES:
        raise UserError(400, "invalid_role", "role %r must be one of %s" % (role, ", ".join(ROLES)))
    check_password(password)


def check_password(password):
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(400, "weak_password", "the password must have at least %d characters" % MIN_PASSWORD)
    if len(password) > 1024:
        raise UserError(400, "invalid_password", "the password must have at most 1024 characters")


def by_name(username):
    return db.session.execute(select(User).where(User.username == username)).scalar()


def all_users():
    return list(db.session.execute(select(User).order_by(User.username)).scalars())


def create(username, password, role, created_by=None):
    validate(username, password, role)
    if by_name(username) is not None:
        raise UserError(409, "duplicate", "a user named %r exists already" % username)
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    db.session.flush()
    audit.record("user.create", "user", user.id, "created %s user %s" % (role, username), after=to_json(user),
                 who=created_by)
    db.session.commit()
    return user


def ensure(username, password, role):
    """Create or update a user with this password and role: 'created', 'updated' or 'unchanged'."""
    validate(username, password, role)
    user = by_name(username)
    if user is None:
        create(username, password, role, created_by=("cli", "system", ""))
        return "created"
    if user.role == role and not user.disabled and check_password_hash(user.password_hash, password):
        return "unchanged"
    before = to_json(user)
    user.role, user.disabled = role, False
    user.password_hash = generate_password_hash(password)
    user.failed_logins, user.locked_until = 0, None
    audit.record("user.update", "user", user.id, "updated user %s (%s)" % (username, role), before=before,
                 after=to_json(user), who=("cli", "system", ""))
    db.session.commit()
    return "updated"


def get(user_id):
    user = db.session.get(User, user_id)
    if user is None:
        raise UserError(404, "not_found", "user %s does not exist (it may have been deleted)" % user_id)
    return user


def _other_admins(user):
    """How many enabled admins there are besides `user` (locked ones count: a lock ends by itself).

    Every enabled admin's row is locked (PostgreSQL, MariaDB: FOR UPDATE) until the commit, so two admins
    demoting each other at once are taken one after the other and the second sees the first's change."""
    ids = db.session.execute(select(User.id).where(User.role == "admin", User.disabled.is_(False))
                             .with_for_update()).scalars().all()
    return len([i for i in ids if i != user.id])


def _keep_an_admin(user, what):
    if user.role == "admin" and not user.disabled and _other_admins(user) == 0:
        raise UserError(409, "last_admin", "%s is the last enabled admin: %s would leave nobody to manage users and "
                        "tokens; make another user admin first" % (user.username, what))


def _refuse_self(user, by, what):
    if by is not None and by.id == user.id:
        raise UserError(400, "own_account", "you cannot %s your own account %s; another admin can"
                        % (what, user.username))


def set_disabled(user_id, disabled=True, by=None):
    user = get(user_id)
    if disabled:
        _refuse_self(user, by, "disable")
        _keep_an_admin(user, "disabling it")
    if user.disabled != disabled:
        before = to_json(user)
        user.disabled = disabled
        audit.record("user.disable" if disabled else "user.enable", "user", user.id,
                     "%s user %s" % ("disabled" if disabled else "enabled", user.username), before=before,
                     after=to_json(user))
        db.session.commit()
    return user


def set_password(user_id, password):
    """A new password (which unlocks the account and ends its sessions on every replica)."""
    user = get(user_id)
    check_password(password)
    before = to_json(user)
    user.password_hash = generate_password_hash(password)
    user.failed_logins, user.locked_until = 0, None
    audit.record("user.password", "user", user.id, "set a new password for %s%s" % (
        user.username, " (which unlocked it)" if before["locked_until"] else ""), before=before, after=to_json(user))
    db.session.commit()
    return user


def set_role(user_id, role, by=None):
    user = get(user_id)
    if role not in ROLES:
        raise UserError(400, "invalid_role", "role %r must be one of %s" % (role, ", ".join(ROLES)))
    if role != user.role:
        if user.role == "admin":
            _refuse_self(user, by, "demote")
            _keep_an_admin(user, "making it %s" % role)
        before = to_json(user)
        user.role = role
        audit.record("user.role", "user", user.id, "made %s %s (was %s)" % (user.username, role, before["role"]),
                     before=before, after=to_json(user))
        db.session.commit()
    return user


def unlock(user_id):
    """End a lock after failed logins (the password stays)."""
    user = get(user_id)
    if user.failed_logins or user.locked_until:
        before = to_json(user)
        user.failed_logins, user.locked_until = 0, None
        audit.record("user.unlock", "user", user.id, "unlocked %s" % user.username, before=before,
                     after=to_json(user))
        db.session.commit()
    return user


def delete(user_id, by=None):
    user = get(user_id)
    _refuse_self(user, by, "delete")
    _keep_an_admin(user, "deleting it")
    before = to_json(user)
    audit.record("user.delete", "user", user.id, "deleted %s user %s" % (user.role, user.username), before=before)
    db.session.delete(user)
    db.session.commit()
    return before


def locked(user):
    return bool(user.locked_until and user.locked_until > utcnow())


class LoginRefused(Exception):
    def __init__(self, message, status=401):
        super().__init__(message)
        self.message, self.status = message, status


class AddressThrottle:
    """Failures per client address in a sliding window (per process; the account lock is shared)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.failures = collections.defaultdict(collections.deque)

    def blocked_for(self, remote, limit, window):
        now = time.monotonic()
        with self.lock:
            q = self.failures.get(remote)
            while q and now - q[0] > window:
                q.popleft()
            if q is not None and not q:
                del self.failures[remote]
                return 0
            return window - (now - q[0]) if q and len(q) >= limit else 0

    def failed(self, remote):
        with self.lock:
            self.failures[remote].append(time.monotonic())
            if len(self.failures) > 100000:      # bounded memory under a flood of addresses
                self.failures.pop(next(iter(self.failures)))


def login(username, password, remote, config, throttle):
    """The User for good credentials; otherwise LoginRefused with the reason an operator may see."""
    limit, window = config["login_max_failures"], config["login_lockout"]
    wait = throttle.blocked_for(remote, limit * 4, window)
    if wait:
        # Not audited one by one (a flood would fill the log): the failures that led here are, each with the address.
        raise LoginRefused("too many failed logins from %s; try again in %d seconds" % (remote, int(wait) + 1), 429)
    user = by_name(username) if isinstance(username, str) and USERNAME.match(username or "") else None
    now = utcnow()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        throttle.failed(remote)
        message = ("the account %s is locked after %d failed logins until %s UTC; an admin can unlock it (Users "
                   "page: unlock, or set a new password)" % (username, user.failed_logins,
                                                             user.locked_until.strftime("%Y-%m-%d %H:%M:%S")))
        audit.refused(message, "user.login", "user", user.id, before=to_json(user), asked={"username": username},
                      who=(username, "anonymous", remote))
        raise LoginRefused(message, 429)
    good = check_password_hash(user.password_hash if user is not None else _DUMMY_HASH, password or "")
    if user is None or not good or user.disabled:
        throttle.failed(remote)
        who = (username if isinstance(username, str) else "?")[:64], "anonymous", remote
        if user is not None and not user.disabled:
            user.failed_logins += 1
            if user.failed_logins >= limit:
                user.locked_until = now + dt.timedelta(seconds=window)
        if user is not None and user.disabled and good:
            message = "the account %s is disabled; ask an admin" % username
            audit.record("user.login", "user", user.id, "refused user.login: " + message, who=who, target=who[0],
                         before=to_json(user), outcome="refused", reason=message)
            db.session.commit()
            raise LoginRefused(message, 403)
        audit.record("user.login_failed", "user", user.id if user else "", "failed login as %s" % who[0], who=who,
                     target=who[0], outcome="refused", reason="wrong username or password")
        db.session.commit()
        raise LoginRefused("wrong username or password")
    user.failed_logins, user.locked_until, user.last_login = 0, None, now
    audit.record("user.login", "user", user.id, "%s logged in" % username, who=(username, "user", remote),
                 target=username)
    db.session.commit()
    return user


def to_json(user):
    def iso(value):
        return value.isoformat() + "Z" if value else None
    return {"id": user.id, "username": user.username, "role": user.role, "disabled": bool(user.disabled),
            "created_at": iso(user.created_at), "last_login": iso(user.last_login),
            "locked_until": iso(user.locked_until) if user.locked_until and user.locked_until > utcnow() else None}
