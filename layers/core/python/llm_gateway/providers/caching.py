"""Provider prompt caching: hints the gateway adds so repeated prefixes are billed at the cached rate.

Anthropic caches only up to explicit `cache_control` breakpoints (at most 4 per request; prefixes
shorter than ~1,024 tokens are not cached). The gateway places them on the stable prefixes:
- the system prompt (the tenant's instructions, identical across its requests), and the RAG
  context when there is one (the gateway sends it as its own system block, after the tenant's);
- the conversation so far: the last message before the final user turn, so a multi-turn chat
  re-reads its history from the cache.
Only prefixes of at least MIN_CACHEABLE_CHARS are marked (a breakpoint on a short prefix costs a
cache write and never pays back).

OpenAI caches prompts of 1,024+ tokens automatically, by prefix: the gateway keeps stable content
first (system prompts, then the RAG context, then the conversation — `GatewayState.model_request`)
and sends `prompt_cache_key`, a digest of the model and the system prefix, so requests sharing a
prefix are routed to the same cache.

Cached input tokens come back in the providers' usage and are priced at the model's
`cached_input_per_mtok` (usage records, `cost_usd`, budgets).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..contracts import PROMPT_ROLES, ChatCompletionRequest

MIN_CACHEABLE_CHARS = 4_096  # ~1,024 tokens at ~4 characters a token
MAX_BREAKPOINTS = 4
EPHEMERAL = {"type": "ephemeral"}


def anthropic_system(blocks: list[str]) -> list[dict[str, Any]] | str:
    """The `system` parameter: text blocks, each long-enough prefix ending in a breakpoint."""
    if sum(len(b) for b in blocks) < MIN_CACHEABLE_CHARS:
        return "\n\n".join(blocks)
    out: list[dict[str, Any]] = []
    prefix = 0
    for text in blocks:
        prefix += len(text)
        block: dict[str, Any] = {"type": "text", "text": text}
        if prefix >= MIN_CACHEABLE_CHARS:
            block["cache_control"] = EPHEMERAL
        out.append(block)
    marked = [b for b in out if "cache_control" in b]
    for block in marked[: max(0, len(marked) - (MAX_BREAKPOINTS - 1))]:  # keep one breakpoint for the history
        del block["cache_control"]
    return out


def anthropic_history_breakpoint(messages: list[dict[str, Any]], system_chars: int, used: int) -> None:
    """Mark the last message before the final user turn (in place) when the prefix up to it is
    long enough and a breakpoint is left."""
    if used >= MAX_BREAKPOINTS or len(messages) < 3:
        return
    last = len(messages) - 1
    while last > 0 and messages[last]["role"] == "user":
        last -= 1
    if last <= 0:
        return
    prefix = system_chars + sum(_chars(m["content"]) for m in messages[: last + 1])
    if prefix < MIN_CACHEABLE_CHARS:
        return
    content = messages[last]["content"]
    if isinstance(content, str):
        messages[last]["content"] = [{"type": "text", "text": content, "cache_control": EPHEMERAL}]
    elif content:  # content blocks (text, tool calls, tool results): the last one ends the prefix
        content[-1]["cache_control"] = EPHEMERAL


def _chars(content: str | list[dict[str, Any]]) -> int:
    """About how much a message's content weighs: its text, or its blocks' text and JSON input."""
    if isinstance(content, str):
        return len(content)
    return sum(len(str(block.get("text") or block.get("content") or block.get("input") or "")) for block in content)


def openai_prompt_cache_key(request: ChatCompletionRequest, model_id: str) -> str | None:
    """A digest of the model and the system prefix; None without a system prompt."""
    system = [m.text() for m in request.messages if m.role in PROMPT_ROLES]
    if not system:
        return None
    digest = hashlib.sha256("\x1f".join([model_id, *system]).encode()).hexdigest()
    return f"gw-{digest[:32]}"
