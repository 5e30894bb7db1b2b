"""Cache keys and tags: a digest of everything that shapes an answer, and labels to purge by."""

from __future__ import annotations

import hashlib
import json

from ..contracts import PROMPT_ROLES, ChatCompletionRequest
from ..semantic.scope import KB_VERSION_FIELD  # `metadata` field naming the knowledge-base version

KB_TAG = "kb"
PROMPT_TAG = "prompt"


def kb_version(request: ChatCompletionRequest) -> str | None:
    value = (request.metadata or {}).get(KB_VERSION_FIELD)
    return None if value is None else str(value)


def exact_key(tenant: str, model_version: str, request: ChatCompletionRequest) -> str:
    """SHA-256 over tenant, resolved model version, all messages (system prompt included, with roles,
    names, tool calls and tool results), generation parameters (tool definitions and tool choice
    among them) and the knowledge-base version tag. Streaming, `user` and the
    rest of `metadata` do not change the answer and are left out, so a streamed request can be
    served from a non-streamed one."""
    material = {
        "v": 1,
        "tenant": tenant,
        "model": model_version,
        "messages": [m.model_dump(exclude_none=True) for m in request.messages],
        "params": request.generation_params(),
    }
    kb = kb_version(request)
    if kb is not None:  # absent for requests without one, so their keys stay as they were
        material["kb"] = kb
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _tag(kind: str, value: str) -> str:
    # Digests, not values: tags are stored next to entries and the values are the client's text.
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def kb_tag(version: str) -> str:
    """The tag of entries answered from knowledge-base version `version` (`metadata.kb_version`)."""
    return _tag(KB_TAG, version)


def prompt_tag(text: str) -> str:
    """The tag of entries answered under a system (or developer) prompt with exactly this text."""
    return _tag(PROMPT_TAG, text)


def cache_tags(request: ChatCompletionRequest) -> tuple[str, ...]:
    """Tags a cached answer carries so it can be purged by knowledge-base version or by system
    prompt: one per distinct system/developer message text, and one for `metadata.kb_version`."""
    tags = [prompt_tag(m.text()) for m in request.messages if m.role in PROMPT_ROLES]
    kb = kb_version(request)
    if kb is not None:
        tags.append(kb_tag(kb))
    return tuple(dict.fromkeys(tags))
