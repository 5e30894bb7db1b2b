"""Prefix KV-cache reuse: blocks of cached keys and values, found by a hash of everything before.

A prompt is cut into blocks of `block_size` tokens. Block i's key is a hash of the request's salt,
block i-1's key and block i's tokens, so equal keys mean equal salts and equal token prefixes.
The salt is the tenant's: two tenants never share a block, even for the same prompt. Blocks live
in one pre-allocated pool on the model's device, least recently used evicted first.

Admitting a request copies the longest run of cached blocks into its slot and prefills only the
rest; after prefill, the prompt's full blocks that were not cached are copied into the pool. At
least the prompt's last token is always prefilled, since its logits give the first new token.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from .model import Llama


def block_keys(salt: str, tokens: list[int], block_size: int) -> list[bytes]:
    """The chained key of each full block of `tokens`."""
    keys = []
    parent = hashlib.blake2b(salt.encode("utf-8"), digest_size=16).digest()
    for start in range(0, len(tokens) - block_size + 1, block_size):
        block = tokens[start : start + block_size]
        digest = hashlib.blake2b(parent, digest_size=16)
        digest.update(b"".join(t.to_bytes(4, "little") for t in block))
        parent = digest.digest()
        keys.append(parent)
    return keys


class PrefixCache:
    def __init__(self, model: Llama, capacity_blocks: int, block_size: int = 16) -> None:
        if capacity_blocks < 1 or block_size < 1:
            raise ValueError("the prefix cache needs at least one block of at least one token")
        cache = model.kv_cache
        layers, _, _, kv_heads, _, head_dim = cache.shape
        self.model = model
        self.block_size = block_size
        self.capacity = capacity_blocks
        self.pool = torch.empty(
            capacity_blocks, layers, 2, kv_heads, block_size, head_dim, dtype=cache.dtype, device=cache.device
        )
        self._index: OrderedDict[bytes, int] = OrderedDict()  # key -> pool row, least recent first
        self._free = list(range(capacity_blocks - 1, -1, -1))
        self.hits = 0
        self.stored = 0

    def __len__(self) -> int:
        return len(self._index)

    def load(self, salt: str, tokens: list[int], slot: int) -> int:
        """Copy the longest cached prefix of `tokens` (whole blocks, leaving at least the last
        token) into `slot`; returns how many positions it filled."""
        usable = tokens[: len(tokens) - 1]
        rows, found = [], []
        for key in block_keys(salt, usable, self.block_size):
            row = self._index.get(key)
            if row is None:
                break
            rows.append(row)
            found.append(key)
        self._touch(found)
        self.hits += len(rows)
        if not rows:
            return 0
        length = len(rows) * self.block_size
        blocks = self.pool[torch.tensor(rows, device=self.pool.device)]  # [n, L, 2, H, bs, D]
        layers, _, heads, _, dim = blocks.shape[1:]
        span = blocks.permute(1, 2, 3, 0, 4, 5).reshape(layers, 2, heads, length, dim)
        self.model.kv_cache[:, :, slot, :, :length] = span
        return length

    def store(self, salt: str, tokens: list[int], slot: int) -> int:
        """Copy the full blocks of `tokens` (cached in `slot`) that the pool lacks; returns how many."""
        added = 0
        keys = block_keys(salt, tokens, self.block_size)
        for number, key in enumerate(keys):
            if key in self._index:
                continue
            self.stored += 1
            row = self._free.pop() if self._free else self._evict()
            start = number * self.block_size
            self.pool[row] = self.model.kv_cache[:, :, slot, :, start : start + self.block_size]
            self._index[key] = row
            added += 1
        self._touch(keys)
        return added

    def _touch(self, keys: list[bytes]) -> None:
        # Deeper blocks first, so that a block is always evicted before the blocks it extends.
        for key in reversed(keys):
            if key in self._index:
                self._index.move_to_end(key)

    def _evict(self) -> int:
        _, row = self._index.popitem(last=False)
        return row

    def clear(self) -> None:
        self._index.clear()
        self._free = list(range(self.capacity - 1, -1, -1))
