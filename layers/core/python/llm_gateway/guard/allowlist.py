"""Reviewed false refusals: a reviewer who approves an input item that a classifier layer refused
or flagged adds its text to the tenant's allow-list (`GuardAllowList`); a later request of that
tenant whose latest user message is the same text (whitespace aside, PII masked as the queue kept
it) skips the classifier layers. PII masking and the blocklist still apply to it."""

from __future__ import annotations

from collections.abc import Iterable

from ..contracts import ChatMessage, GuardDecision
from ..moderation.cascade import TIER2, TIER3
from ..ports import AllowedText, GuardAllowList, ReviewItem, normalised_text

INJECTION_LAYER = "prompt_injection"
TOPIC_LAYER = "topic"
COPYRIGHT_LAYER = "copyright"
# The layers whose scores a reviewed text may skip (not PII masking, not the blocklist).
CLASSIFIER_LAYERS = frozenset({INJECTION_LAYER, TIER2, TIER3, TOPIC_LAYER, COPYRIGHT_LAYER})
ALLOWLIST_LAYER = "allowlist"


def latest_user_text(messages: Iterable[ChatMessage]) -> str:
    """The last non-empty user message's text ('' when there is none)."""
    return next((m.text() for m in reversed(list(messages)) if m.role == "user" and m.text().strip()), "")


def allowlist_decision(allowlist: GuardAllowList, tenant: str, messages: list[ChatMessage]) -> GuardDecision | None:
    """A `pass` decision of the `allowlist` layer when the tenant allows the latest user message of
    `messages` (as masked), else None: one lookup."""
    text = latest_user_text(messages)
    if not text or not allowlist.allows(tenant, text):
        return None
    return GuardDecision(layer=ALLOWLIST_LAYER, action="pass", reason="reviewed text")


def learns(item: ReviewItem) -> bool:
    """Whether approving `item` allow-lists its text: an input a classifier layer refused or flagged."""
    return item.kind == "input" and item.layer in CLASSIFIER_LAYERS


def remember_approval(item: ReviewItem, allowlist: GuardAllowList, now: float) -> bool:
    """Allow-list an approved item's text (as queued: PII masked); True when it is new."""
    if item.status != "approved" or not learns(item) or not normalised_text(item.text):
        return False
    entry = AllowedText(tenant=item.tenant, text=item.text, layer=item.layer, item_id=item.item_id, added_at=now)
    return allowlist.add(entry)


def approved_rows(items: Iterable[ReviewItem]) -> list[dict[str, str]]:
    """Training rows (`label` benign) from the approved items that `learns` from, once per tenant,
    layer and text."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for item in items:
        if item.status == "approved" and learns(item):
            key = (item.tenant, item.layer, normalised_text(item.text))
            rows.setdefault(key, {"text": item.text, "tenant": item.tenant, "layer": item.layer, "label": "benign"})
    return list(rows.values())
