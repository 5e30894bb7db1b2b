"""Responders for the fake providers that answer each request by what it asks, so a replayed
workload is billed as the real services would bill it (`Script(responder=...)`):

- prompt tokens: the request's text at 4 characters per token, plus 4 per message;
- completion tokens: an answer as long as the question calls for (longer questions, longer
  answers: 150 + 1.5 per question token, at most 900, plus a stable 0-79), 60 at most when the
  gateway's brevity instruction is in the system prompt, and cut at the request's `max_tokens`
  (`finish_reason` "length");
- provider prompt caching as the services do it. OpenAI: automatic for prompts of 1,024+ tokens,
  by prefix in 128-token steps, with or without `prompt_cache_key`. Anthropic: only up to the
  `cache_control` breakpoints the request marks, for prefixes of 1,024+ tokens; a prefix seen
  before is read from the cache, a new one is written (reported as `cache_creation_input_tokens`).

The caches are per responder (one per model) and thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import replace
from typing import Any, Literal

from llm_gateway.contracts import BREVITY_INSTRUCTION

from .fake_providers import Ok, ok

CHARS_PER_TOKEN = 4
MIN_CACHED_TOKENS = 1024
OPENAI_CACHE_STEP = 128


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PricedResponder:
    """Answers one provider's requests (`kind`: the wire format) with usage computed from them."""

    def __init__(self, kind: Literal["openai", "anthropic"]) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._cached: set[str] = set()

    def __call__(self, body: Any) -> Ok:
        if not isinstance(body, dict):
            return ok()
        blocks, system = self._blocks(body)
        prompt = "".join(text for text, _ in blocks)
        prompt_tokens = tokens(prompt) + 4 * len(body.get("messages") or [])
        cached, written = self._cache(blocks)
        question = next(
            (_text(m.get("content")) for m in reversed(body.get("messages") or []) if m.get("role") == "user"), ""
        )
        natural = min(900, 150 + int(1.5 * tokens(question))) + int(_digest(question)[:8], 16) % 80
        if BREVITY_INSTRUCTION in system:
            natural = min(natural, 60)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = min(natural, int(limit)) if limit else natural
        finish = ("length" if self.kind == "openai" else "max_tokens") if completion < natural else None
        text = ("The answer, in detail. " * (completion // 5 + 1))[: completion * CHARS_PER_TOKEN]
        reply = ok(text, prompt_tokens, completion, min(cached, prompt_tokens), finish)
        return replace(reply, cache_write_tokens=min(written, prompt_tokens - reply.cached_tokens))

    def _blocks(self, body: dict[str, Any]) -> tuple[list[tuple[str, bool]], str]:
        """The prompt as (text, ends a cache breakpoint) blocks in the order the provider reads
        them, and the system text."""
        blocks: list[tuple[str, bool]] = []
        system_texts: list[str] = []
        raw_system = body.get("system")
        if isinstance(raw_system, str):
            blocks.append((raw_system, False))
            system_texts.append(raw_system)
        elif isinstance(raw_system, list):
            for block in raw_system:
                blocks.append((str(block.get("text", "")), "cache_control" in block))
                system_texts.append(str(block.get("text", "")))
        for message in body.get("messages") or []:
            content = message.get("content")
            if message.get("role") == "system":
                system_texts.append(_text(content))
            if isinstance(content, list):
                blocks += [(_text([part]), "cache_control" in part) for part in content if isinstance(part, dict)]
            else:
                blocks.append((_text(content), False))
        return blocks, "\n".join(system_texts)

    def _cache(self, blocks: list[tuple[str, bool]]) -> tuple[int, int]:
        """(tokens read from this provider's prompt cache, tokens written to it: Anthropic bills a
        new breakpoint prefix as a write); records the prefixes it would store."""
        prefix = ""
        candidates: list[str] = []  # cacheable prefixes, shortest first
        for text, breakpoint in blocks:
            if self.kind == "openai":
                start = len(prefix)
                prefix += text
                step = OPENAI_CACHE_STEP * CHARS_PER_TOKEN
                first = MIN_CACHED_TOKENS * CHARS_PER_TOKEN
                for end in range(first, len(prefix) + 1, step):
                    if end > start:
                        candidates.append(prefix[:end])
            else:
                prefix += text
                if breakpoint and tokens(prefix) >= MIN_CACHED_TOKENS:
                    candidates.append(prefix)
        with self._lock:
            hit = max((len(c) for c in candidates if _digest(json.dumps(c)) in self._cached), default=0)
            new = [len(c) for c in candidates if _digest(json.dumps(c)) not in self._cached]
            self._cached.update(_digest(json.dumps(c)) for c in candidates)
        written = max(new, default=hit) - hit if self.kind == "anthropic" else 0
        return hit // CHARS_PER_TOKEN, written // CHARS_PER_TOKEN
