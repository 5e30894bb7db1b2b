"""Builders for what the ports store: responses, usage and audit records."""

from __future__ import annotations

import uuid
from typing import Any

from llm_gateway.contracts import AssistantMessage, ChatCompletion, Choice, Usage
from llm_gateway.identity import pseudonym
from llm_gateway.ports import AuditRecord, UsageRecord

RAW_USER = "alice@example.com"
RAW_IP = "203.0.113.7"


def completion(text: str = "Paris.", model: str = "echo") -> ChatCompletion:
    usage = Usage.of(12, 3, cached=4).model_copy(update={"cost_usd": 0.000123})
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex[:8]}",
        created=1_790_000_000,
        model=model,
        choices=[Choice(message=AssistantMessage(content=text), finish_reason="stop")],
        usage=usage,
        system_fingerprint="fp_test",
    )


def usage_record(tenant: str = "acme", ts: float = 1_790_000_000.25, **changes: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "ts": ts,
        "tenant": tenant,
        "key_id": "k1",
        "user_hash": pseudonym(tenant, RAW_USER),
        "model": "echo",
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "cached_tokens": 4,
        "cost_usd": 0.0000123,
    }
    return UsageRecord(**(fields | changes))


def audit_record(tenant: str | None = "acme", ts: float = 1_790_000_000.25, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "ts": ts,
        "tenant": tenant,
        "key_id": "k1" if tenant else None,
        "user_hash": pseudonym(tenant or "", RAW_USER) if tenant else None,
        "client_ip_hash": pseudonym(tenant or "", RAW_IP),
        "route": "default" if tenant else None,
        "model": "echo" if tenant else None,
        "provider": "echo" if tenant else None,
        "cache": "miss" if tenant else None,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "cached_tokens": 0,
        "cost_usd": 0.0000123,
        "latency_ms": 41.5,
        "attempts": 1,
        "outcome": "ok" if tenant else "error",
        "error_code": None if tenant else "invalid_api_key",
    }
    return AuditRecord(**(fields | changes))
