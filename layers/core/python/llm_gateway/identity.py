"""Pseudonymous identifiers for audit and usage records: raw user ids and IPs are never stored.

A pseudonym is a keyed hash (HMAC-SHA256) under a per-deployment secret, so a record cannot be
reversed by hashing every IPv4 address or a list of likely user ids, as an unkeyed digest can.
The key comes from `LLM_GATEWAY_PSEUDONYM_KEY`, or is set once per process by the runtime:
`llm-gateway serve` keeps one in a file next to its store (`key_file`), the Lambdas read one from
Secrets Manager (`PSEUDONYM_SECRET_ARN`). Without either, a process draws a random key: its
pseudonyms are stable for its lifetime only (tests, one-off commands).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

KEY_ENV = "LLM_GATEWAY_PSEUDONYM_KEY"
_lock = threading.Lock()
_key: bytes | None = None


def set_pseudonym_key(key: str | bytes) -> None:
    """Use `key` for every pseudonym this process computes from now on."""
    global _key  # noqa: PLW0603 - one key per process is the point
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < 16:
        raise ValueError("a pseudonym key must be at least 16 bytes")
    with _lock:
        _key = raw


def _current_key() -> bytes:
    global _key  # noqa: PLW0603
    if _key is None:
        with _lock:
            if _key is None:
                configured = os.environ.get(KEY_ENV)
                _key = configured.encode() if configured else secrets.token_bytes(32)
    return _key


def key_file(path: Path) -> bytes:
    """The key kept in `path` (created, readable by its owner only, on first use)."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def pseudonym(tenant: str, value: str | None) -> str | None:
    """A stable 16-hex-digit keyed digest of `value` scoped to the tenant, or None."""
    if value is None:
        return None
    return hmac.new(_current_key(), f"{tenant}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]
