"""Audit and usage pseudonyms are keyed: stable under one deployment's key, not an unkeyed digest
that anyone can reverse by hashing every IPv4 address."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from llm_gateway import identity
from llm_gateway.identity import key_file, pseudonym, set_pseudonym_key
from llm_gateway.runner import InProcessRunner
from tests.conftest import make_deps, make_state, store_of


@pytest.fixture(autouse=True)
def _restore_key() -> object:
    saved = identity._key
    yield
    identity._key = saved


def test_a_pseudonym_is_not_the_unkeyed_digest_and_depends_on_the_key() -> None:
    set_pseudonym_key("deployment-one-key-0123456789")
    first = pseudonym("acme", "198.51.100.4")
    unkeyed = hashlib.sha256(b"acme\x00198.51.100.4").hexdigest()[:16]
    assert first is not None and len(first) == 16 and first != unkeyed
    assert pseudonym("acme", "198.51.100.4") == first  # stable under one key
    assert pseudonym("globex", "198.51.100.4") != first  # scoped to the tenant
    set_pseudonym_key("deployment-two-key-0123456789")
    assert pseudonym("acme", "198.51.100.4") != first
    assert pseudonym("acme", None) is None


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        set_pseudonym_key("short")


def test_the_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "store" / "pseudonym.key"
    key = key_file(path)
    assert len(key) == 64 and key_file(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_audit_rows_carry_keyed_pseudonyms_only() -> None:
    set_pseudonym_key("audit-test-key-0123456789abcdef")
    runner = InProcessRunner(make_deps())
    state = runner.run(make_state("hello", user="user-42"))
    [(ip_hash, user_hash)] = store_of(runner.deps).query(
        "SELECT client_ip_hash, user_hash FROM audit WHERE request_id = ?", (state.request_id,)
    )
    assert ip_hash == pseudonym("acme", "198.51.100.4")
    assert user_hash == pseudonym("acme", "user-42")
    assert ip_hash != hashlib.sha256(b"acme\x00198.51.100.4").hexdigest()[:16]
