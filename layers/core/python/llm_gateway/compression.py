"""Prompt compression: fewer input tokens for the same request (`tenants.<name>.compression`).

Lossless steps (on by default when compression is enabled), applied to every text message:
- whitespace: runs of spaces and tabs become one space, three or more line breaks two, trailing
  spaces go; code blocks (``` fences) are left as they are;
- duplicate instructions: a paragraph (40+ characters) that already appeared earlier in the
  conversation — the same instruction pasted into the system prompt and the user message, or the
  boilerplate repeated before every few-shot example — is dropped after its first appearance.

Lossy step (opt-in, `lossy_max_tokens`): a user or tool message longer than that budget (a pasted
document, a long context) keeps only its most salient sentences — by embedding similarity to the
latest user question — in their original order, until the budget (4 characters a token) is
filled. The latest user message itself is never cut.

Tokens saved are estimated as characters saved / 4; they are reported on the guard result, in
the `compression_saved_tokens` metric and the `x-gateway-compression-saved-tokens` header.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Compression
from .contracts import ChatMessage, TextPart

CHARS_PER_TOKEN = 4
MIN_DUPLICATE_CHARS = 40
_FENCE = re.compile(r"(```.*?```)", re.DOTALL)
_SPACES = re.compile(r"[ \t]+")
_TRAILING = re.compile(r"[ \t]+\n")
_BREAKS = re.compile(r"\n{3,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]


@dataclass(frozen=True)
class Compressed:
    messages: list[ChatMessage]
    chars_before: int
    chars_after: int

    @property
    def saved_tokens(self) -> int:
        return max(0, self.chars_before - self.chars_after) // CHARS_PER_TOKEN


def squeeze_whitespace(text: str) -> str:
    parts = _FENCE.split(text)
    for i in range(0, len(parts), 2):  # outside code fences
        part = _TRAILING.sub("\n", parts[i])
        part = _SPACES.sub(" ", part)
        parts[i] = _BREAKS.sub("\n\n", part)
    return "".join(parts).strip()


def _drop_repeats(text: str, seen: set[str]) -> str:
    kept = []
    for paragraph in text.split("\n\n"):
        key = " ".join(paragraph.split()).lower()
        if len(key) >= MIN_DUPLICATE_CHARS and "```" not in paragraph:
            if key in seen:
                continue
            seen.add(key)
        kept.append(paragraph)
    return "\n\n".join(kept)


def salient(text: str, question: str, budget_chars: int, embed: Embed) -> str:
    """The sentences of `text` most similar to `question`, in their order, within the budget."""
    import numpy as np  # only the lossy step needs it (the guard function's cold start does not)

    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    if len(text) <= budget_chars or len(sentences) < 2:
        return text
    vectors = embed([question, *sentences])
    scores = vectors[1:] @ vectors[0]
    chosen: set[int] = set()
    used = 0
    for i in np.argsort(-scores, kind="stable"):
        if used + len(sentences[i]) + 1 > budget_chars:
            continue
        chosen.add(int(i))
        used += len(sentences[i]) + 1
    return " ".join(sentences[i] for i in sorted(chosen))


def compress(messages: list[ChatMessage], policy: Compression, embed: Embed | None = None) -> Compressed:
    """The messages after the policy's steps (the input is not changed)."""
    before = sum(len(m.text()) for m in messages)
    seen: set[str] = set()
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    question = messages[last_user].text() if last_user >= 0 else ""

    def rewrite(text: str, index: int, role: str) -> str:
        if policy.lossless:
            text = _drop_repeats(squeeze_whitespace(text), seen)
        if (
            policy.lossy_max_tokens is not None
            and embed is not None
            and index != last_user
            and role in ("user", "tool")
            and len(text) > policy.lossy_max_tokens * CHARS_PER_TOKEN
        ):
            text = salient(text, question, policy.lossy_max_tokens * CHARS_PER_TOKEN, embed)
        return text

    out = []
    for index, message in enumerate(messages):
        if isinstance(message.content, str):
            text = rewrite(message.content, index, message.role)
            out.append(message if text == message.content else message.model_copy(update={"content": text}))
        elif isinstance(message.content, list):
            parts = [
                _rewritten_part(p, rewrite(p.text, index, message.role)) if isinstance(p, TextPart) else p
                for p in message.content
            ]
            changed = any(new is not old for new, old in zip(parts, message.content, strict=True))
            out.append(message.model_copy(update={"content": parts}) if changed else message)
        else:
            out.append(message)
    return Compressed(out, before, sum(len(m.text()) for m in out))


def _rewritten_part(part: TextPart, text: str) -> TextPart:
    """The part with `text`, or the part itself when nothing changed (no copy to make)."""
    return part if text == part.text else part.model_copy(update={"text": text})
