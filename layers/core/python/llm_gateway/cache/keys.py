"""Cache keys: a digest of everything that shapes an answer."""

from __future__ import annotations

import hashlib
import json

from ..contracts import ChatCompletionRequest


def exact_key(tenant: str, model_version: str, request: ChatCompletionRequest) -> str:
    """SHA-256 over tenant, resolved model version, all messages (system prompt included, with roles
    and names) and generation parameters. Streaming, `user` and `metadata` do not change the answer
    and are left out, so a streamed request can be served from a non-streamed one."""
    material = {
        "v": 1,
        "tenant": tenant,
        "model": model_version,
        "messages": [m.model_dump(exclude_none=True) for m in request.messages],
        "params": request.generation_params(),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
