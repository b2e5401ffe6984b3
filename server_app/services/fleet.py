"""The fleet view: each gateway's session, lag and digest, and what of the published set it does not enforce
and why, from what its agent said it holds (docs/protocol.md)."""

from __future__ import annotations

import json
import threading

from sqlalchemy import select

from og_kernel.og_elements import FAMILY_OFF, Holding, reason_text
from og_kernel.og_netpolicy import TargetError

from ..extensions import db
from ..models import EntryElement, Gateway, utcnow
from . import changelog, entries, gateways

NAMED = 100     # the fleet view names at most this many not-enforced elements per gateway

_holdings = {}
_holdings_lock = threading.Lock()


def holding_of(text):
    """The Holding stored as JSON in gateways.holds (parsed once per distinct text); None when unknown."""
    if not text:
        return None
    with _holdings_lock:
        holding = _holdings.get(text)
        if holding is None:
            try:
                holding = Holding.from_wire(json.loads(text))
            except (ValueError, TargetError):
                return None
            if len(_holdings) >= 256:
                _holdings.clear()
            _holdings[text] = holding
        return holding


def gateway_holdings():
    """[(gateway name, Holding)] of every known gateway whose agent said what it holds, by name."""
    rows = db.session.execute(select(Gateway.name, Gateway.holds).where(Gateway.holds != "")
                              .order_by(Gateway.name)).all()
    pairs = [(name, holding_of(text)) for name, text in rows]
    return [(name, holding) for name, holding in pairs if holding is not None]


def _item(name, reason, element):
    return {"gateway": name, "reason": reason, "message": reason_text(reason, element)}


def not_enforced(texts, holdings=None):
    """{text: [{gateway, reason, message}, ...]} for element or network texts, each with the gateways that do
    not enforce it and why ([] when every gateway that said what it holds enforces it)."""
    holdings = gateway_holdings() if holdings is None else holdings
    return {text: [_item(name, holding.reason(text), text) for name, holding in holdings
                   if holding.reason(text) is not None] for text in texts}


def entry_elements(entry):
    """The published elements of an entry, each with the gateways that do not enforce it and why."""
    texts = sorted(db.session.execute(select(EntryElement.element).where(EntryElement.entry_id == entry.id))
                   .scalars())
    gaps = not_enforced(texts)
    return [{"element": text, "not_enforced": gaps[text]} for text in texts]


def _label(reason, element):
    return ("IPv%d off" % (6 if ":" in element else 4)) if reason == FAMILY_OFF else "its internal networks"


# The kinds of difference the fleet view names, in the order it shows them: (kind, reason) -> label, the
# message of each element, and the words of the status line.
KINDS = {
    ("skipped", "no_ipv6"): ("skipped: no IPv6", "IPv6 is off on this gateway", "skipped: no IPv6"),
    ("skipped", "no_ipv4"): ("skipped: no IPv4", "IPv4 is off on this gateway", "skipped: no IPv4"),
    ("refused", "internal"): ("refused by its own policy", "inside this gateway's internal networks",
                              "refused by its own policy (internal networks)"),
    ("missing", "kernel"): ("missing from its kernel", "applied by its agent, but not in the kernel's sets",
                            "missing from its kernel"),
    ("extra", "kernel"): ("extra in its kernel", "in the kernel's sets, but not what its agent applied",
                          "extra in its kernel"),
}


def _group(kind, reason, texts, count=None):
    label, message, _words = KINDS[kind, reason]
    return {"kind": kind, "reason": reason, "label": label, "count": len(texts) if count is None else count,
            "elements": [{"element": e, "message": message} for e in sorted(texts)[:NAMED]]}


def kernel_diff_of(text):
    """The differs object the agent sent in its last ack (og_protocol.FEATURE_DIFFERS); None when unsaid."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def differences(skipped, diff):
    """The groups of what a gateway does not hold as the published set has it, and why: skipped (an address
    family it does not have), refused by its own policy (its internal networks), missing from and extra in its
    kernel (as its agent read them back)."""
    groups = []
    for family, reason in ((6, "no_ipv6"), (4, "no_ipv4")):
        texts = [e for e, why in skipped.items() if why == FAMILY_OFF and (":" in e) == (family == 6)]
        if texts:
            groups.append(_group("skipped", reason, texts))
    refused = [e for e, why in skipped.items() if why != FAMILY_OFF]
    if refused:
        groups.append(_group("refused", "internal", refused))
    for kind in ("missing", "extra"):
        if diff and diff.get(kind + "_count"):
            groups.append(_group(kind, "kernel", diff.get(kind) or [], diff[kind + "_count"]))
    return groups


def _words(groups):
    return ", ".join("%d %s" % (g["count"], KINDS[g["kind"], g["reason"]][2]) for g in groups)


def gateway_state(gw, head, memo):
    """The fields the fleet view adds to a gateway: what it does not hold at the head, grouped by why
    (differences), and a status line that tells "in sync; 2 skipped: no IPv6" from a real mismatch, which it
    explains as far as the agent said. memo: a dict shared by the gateways of one view (one filter per
    distinct holding)."""
    holding = holding_of(gw.holds)
    gaps = None
    skipped = {}
    if holding is not None:
        if holding.key not in memo:
            memo[holding.key] = changelog.held_at_head(holding)[1]
        skipped = memo[holding.key]
        named = sorted(skipped)[:NAMED]
        labels = sorted({_label(skipped[e], e) for e in skipped})
        gaps = {"count": len(skipped), "reasons": labels,
                "elements": [{"element": e, "reason": skipped[e], "message": reason_text(skipped[e], e)}
                             for e in named]}
    lag = max(0, head - gw.applied_revision)
    in_sync = bool(gw.digest_match) and lag == 0
    diff = kernel_diff_of(gw.kernel_diff)
    groups = differences(skipped, None if in_sync else diff)
    policy = [g for g in groups if g["kind"] in ("skipped", "refused")]
    kernel = [g for g in groups if g["kind"] in ("missing", "extra")]
    counted = None
    if lag:
        status = "behind: at revision %d of %d" % (gw.applied_revision, head)
    elif not in_sync:
        key = ("count", holding.key if holding is not None else None)
        if key not in memo:
            memo[key] = changelog.held_count_at_head(holding)
        counted = {"holds": gw.elements, "expected": memo[key]}
        if kernel:
            status = "differs at revision %d: %s" % (head, _words(kernel))
        elif diff is not None:
            status = ("differs at revision %d: its kernel holds what its agent applied (%d elements, %d expected), "
                      "but that is not the published set; a snapshot is sent" % (head, gw.elements, memo[key]))
        else:
            status = ("differs: its kernel does not hold what it should at revision %d (%d elements, %d expected%s)"
                      % (head, gw.elements, memo[key], "" if holding is not None else
                         "; its agent did not say what it holds, so what its policy refuses counts as missing"))
    elif policy:
        status = "in sync; not enforced: %s" % _words(policy)
    else:
        status = "in sync"
    return {"in_sync": in_sync, "status": status, "families": list(holding.families) if holding else None,
            "not_enforced": gaps, "differences": groups, "counts": counted}


def why(address, config):
    """entries.why(), each published network with the gateways that do not enforce it and why."""
    result = entries.why(address, config)
    if "name" in result:   # a domain name: its entries, no networks to check against the gateways
        return result
    gaps = not_enforced({item["network"] for item in result["entries"] if item["published"]})
    for item in result["entries"]:
        item["not_enforced"] = gaps.get(item["network"], [])
    return result


def view(when):
    """The fleet as the API and the UI show it: each gateway with its lag, whether its digest matches what it
    is meant to hold at the head revision, what of the published set it does not enforce and why, and whether
    its session is alive (gateways.connected); `when` formats the timestamps."""
    head = changelog.head_revision()
    rows = db.session.query(Gateway).order_by(Gateway.name).all()
    memo = {}
    now = utcnow()
    return {"revision": head, "items": [dict({
        "name": gw.name, "connected": gateways.connected(gw, now), "address": gw.address,
        "agent_version": gw.agent_version,
        "applied_revision": gw.applied_revision, "lag": max(0, head - gw.applied_revision),
        "digest_match": bool(gw.digest_match and gw.applied_revision == head), "elements": gw.elements,
        "connected_at": when(gw.connected_at), "last_seen": when(gw.last_seen),
        # mode: set through the API, else what the agent said it runs; running_mode: what it runs (None: unsaid).
        "mode": gw.mode or gw.running_mode or "enforce", "mode_set": gw.mode or None,
        "running_mode": gw.running_mode or None},
        **gateway_state(gw, head, memo)) for gw in rows]}
