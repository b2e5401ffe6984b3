# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The set digest (docs/protocol.md): the fast path for canonical texts agrees with the parsing one."""

from __future__ import absolute_import, division, print_function

from og_kernel.og_elements import Element, digest, digest_canonical

__metaclass__ = type


def test_the_canonical_digest_equals_the_parsing_digest_for_canonical_texts():
    texts = {Element.parse(t).text for t in ("198.51.100.10", "2001:DB8::1/128", "203.0.113.0/24 443/tcp",
                                             "198.51.100.0/24 8000-8100/tcp", "192.0.2.7/32 53/udp")}
    assert digest_canonical(texts) == digest(texts) == digest([Element.parse(t) for t in texts])
    assert digest_canonical([]) == digest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # Not canonical: only the parsing digest normalises it (the canonical path is for stored texts only).
    assert digest(["198.51.100.10"]) == digest_canonical(["198.51.100.10/32"]) != digest_canonical(["198.51.100.10"])
