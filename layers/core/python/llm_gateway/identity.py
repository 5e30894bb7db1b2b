"""Pseudonymous identifiers for audit and usage records: raw user ids and IPs are never stored."""

from __future__ import annotations

import hashlib


def pseudonym(tenant: str, value: str | None) -> str | None:
    """A stable 16-hex-digit digest of `value` scoped to the tenant, or None."""
    if value is None:
        return None
    return hashlib.sha256(f"{tenant}\x00{value}".encode()).hexdigest()[:16]
