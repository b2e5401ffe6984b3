# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The set digest (docs/protocol.md): the fast path for canonical texts agrees with the parsing one."""

from __future__ import absolute_import, division, print_function

import random

from og_kernel.og_elements import Element, SortedTexts, digest, digest_canonical

__metaclass__ = type


def test_the_canonical_digest_equals_the_parsing_digest_for_canonical_texts():
    texts = {Element.parse(t).text for t in ("198.51.100.10", "2001:DB8::1/128", "203.0.113.0/24 443/tcp",
                                             "198.51.100.0/24 8000-8100/tcp", "192.0.2.7/32 53/udp")}
    assert digest_canonical(texts) == digest(texts) == digest([Element.parse(t) for t in texts])
    assert digest_canonical([]) == digest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # Not canonical: only the parsing digest normalises it (the canonical path is for stored texts only).
    assert digest(["198.51.100.10"]) == digest_canonical(["198.51.100.10/32"]) != digest_canonical(["198.51.100.10"])


def test_sorted_texts_keep_the_digest_of_their_texts_through_adds_and_discards():
    rng = random.Random(7)
    pool = ["198.51.%d.%d/32" % (rng.randrange(256), rng.randrange(256)) for _n in range(3000)]
    held = set(pool[:1500])
    SortedTexts.BLOCK, block = 16, SortedTexts.BLOCK  # small blocks: splits and emptied blocks happen here
    try:
        texts = SortedTexts(held)
        for step in range(4000):
            text = rng.choice(pool)
            if text in held:
                held.discard(text)
                texts.discard(text)
            else:
                held.add(text)
                texts.add(text)
            texts.discard("203.0.113.1/32")  # never there: no change
            if step % 250 == 0:
                assert (texts.digest(), len(texts), list(texts)) == (digest_canonical(held), len(held), sorted(held))
        for text in sorted(held):
            texts.discard(text)
        assert (texts.digest(), len(texts), list(texts)) == (digest_canonical([]), 0, [])
        texts.add("198.51.100.1/32")
        assert texts.digest() == digest_canonical(["198.51.100.1/32"])
    finally:
        SortedTexts.BLOCK = block
