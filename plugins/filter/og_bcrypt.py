# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""og_bcrypt: a password's bcrypt hash with a salt derived from a seed, so a rerun writes the same hash.

The roles write the metrics endpoints' web config (node_exporter's shape) from plain passwords in their variables,
as prometheus-community's node_exporter role does (it seeds password_hash's salt with the host name): a random salt
would change the file, and restart the daemons, at every run. ansible.builtin.password_hash cannot be used here:
its bcrypt needs passlib, which does not work with bcrypt 5. This filter uses the bcrypt package directly.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib

from ansible.errors import AnsibleFilterError

try:
    import bcrypt
    HAS_BCRYPT = True
except ImportError:
    HAS_BCRYPT = False

# bcrypt's own base64 alphabet (not RFC 4648's).
ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def salt_for(seed, rounds):
    """A bcrypt salt ($2b$, cost rounds) made from sha256(seed): 22 characters of bcrypt's alphabet."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    number = int.from_bytes(digest[:16], "big")
    chars = []
    for _position in range(22):
        chars.append(ALPHABET[number % 64])
        number //= 64
    # The last character carries 4 bits of the 128-bit salt; keep only values bcrypt writes back unchanged.
    chars[21] = ALPHABET[ALPHABET.index(chars[21]) & 0x30]
    return ("$2b$%02d$%s" % (rounds, "".join(chars))).encode("ascii")


def og_bcrypt(password, seed, rounds=12):
    """The bcrypt hash of password, salted from seed (e.g. the host and user name)."""
    if not HAS_BCRYPT:
        raise AnsibleFilterError("og_bcrypt needs the bcrypt Python package on the controller: pip install bcrypt "
                                 "(in the Python that runs ansible-playbook)")
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("og_bcrypt: the password must be a non-empty string")
    if len(password.encode("utf-8")) > 72:
        raise AnsibleFilterError("og_bcrypt: a password of %d bytes is longer than bcrypt takes (72 bytes); "
                                 "use a shorter one" % len(password.encode("utf-8")))
    if not 4 <= int(rounds) <= 31:
        raise AnsibleFilterError("og_bcrypt: rounds %s must be within 4-31" % rounds)
    return bcrypt.hashpw(password.encode("utf-8"), salt_for(str(seed), int(rounds))).decode("ascii")


class FilterModule(object):
    def filters(self):
        return {"og_bcrypt": og_bcrypt}
