"""Drafters for speculative decoding: the target model checks several guessed tokens in one step.

A drafter proposes up to `k` tokens that continue the sequence; the engine runs the target model
once over the last accepted token and the proposal, keeps the proposal's longest prefix that
matches the target's own greedy choices, and adds the target's choice after it. Every token kept
is one the target chose itself, so greedy output is the same as without speculation; the gain is
fewer target steps when guesses are right.

- `PromptLookup`: the tokens that followed the latest earlier occurrence of the sequence's last
  n-gram (n from `max_ngram` down to `min_ngram`). Free to compute; it wins on copy-heavy work
  (editing code, quoting a document, summarising with the source's words).
- `DraftModel`: a small model of the same tokenizer, decoding greedily on its own KV cache.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .model import Llama


class Drafter(Protocol):
    def propose(self, slot: int, history: list[int], k: int) -> list[int]:
        """Up to `k` tokens to follow `history` (the prompt and the tokens accepted so far)."""
        ...

    def reset(self, slot: int) -> None:
        """Forget the sequence in `slot` (a new request took it)."""
        ...


class PromptLookup:
    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("prompt lookup needs 1 <= min_ngram <= max_ngram")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        # Per slot: n-gram -> end of its latest occurrence, over every n-gram ending before `indexed`.
        self._index: dict[int, dict[tuple[int, ...], int]] = {}
        self._indexed: dict[int, int] = {}

    def reset(self, slot: int) -> None:
        self._index.pop(slot, None)
        self._indexed.pop(slot, None)

    def propose(self, slot: int, history: list[int], k: int) -> list[int]:
        index = self._index.setdefault(slot, {})
        # Index the n-grams that end before the last token; the tail itself is the query.
        for end in range(self._indexed.get(slot, 1), len(history)):
            for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
                index[tuple(history[end - n : end])] = end
        self._indexed[slot] = max(self._indexed.get(slot, 1), len(history))
        for n in range(min(self.max_ngram, len(history) - 1), self.min_ngram - 1, -1):
            found = index.get(tuple(history[-n:]))
            if found is not None:
                return history[found : found + k]
        return []


class DraftModel:
    """Greedy drafts from a small model; its KV cache has the target's slots."""

    def __init__(self, model: Llama) -> None:
        self.model = model
        self._cached: dict[int, list[int]] = {}  # tokens whose keys and values the slot holds

    def reset(self, slot: int) -> None:
        self._cached.pop(slot, None)

    @torch.inference_mode()
    def propose(self, slot: int, history: list[int], k: int) -> list[int]:
        if len(history) + k >= self.model.max_len:
            return []
        cached = self._cached.get(slot, [])
        common = 0
        for old, new in zip(cached, history, strict=False):
            if old != new:
                break
            common += 1
        common = min(common, len(history) - 1)  # feed at least one token to get logits
        device = self.model.kv_cache.device
        pending = history[common:]
        draft: list[int] = []
        position = common
        for _ in range(k):
            tokens = torch.tensor([pending], device=device)
            positions = torch.arange(position, position + len(pending), device=device)[None]
            logits = self.model(tokens, positions, slot, position + len(pending), last_only=True)
            token = int(logits[0, -1].argmax())
            position += len(pending)
            draft.append(token)
            pending = [token]
        # The cache holds history and every draft token but the last one.
        self._cached[slot] = history + draft[:-1]
        return draft
