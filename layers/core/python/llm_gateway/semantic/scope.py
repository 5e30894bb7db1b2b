"""What must match exactly before two requests may share an answer by meaning.

A semantic hit compares only the *query* (the last user message) by meaning; everything else that
shapes the answer is folded into an opaque *scope* digest, and the index searches one scope only.
So an entry can never be served across tenants, model versions, system prompts, conversations,
response formats or knowledge-base versions, however similar the query text is.

Decisions:
- Multi-turn: every message except the last user message's text is part of the scope, in order,
  with roles and names (the last user message appears as a placeholder, so its position counts).
  Two conversations share answers only when everything before the question is identical.
- Output limit (`max_completion_tokens`/`max_tokens`): exact, not bucketed. A bucket would let an
  answer generated under a larger cap reach a caller who asked for fewer tokens, or a truncated
  (`finish_reason: length`) one reach a caller who allowed more; clients usually send a constant
  cap, so exactness costs few hits.
- Temperature is *not* in the scope: any sample at or below the tenant's limit is an acceptable
  answer (see `semantic_allowed`). The other sampling parameters (top_p, penalties, stop, seed)
  are, exactly: a caller who sets a seed asks for that seed's answer.
- `metadata["kb_version"]` (the knowledge-base version a RAG client answered from) is in the
  scope: a new version never matches older entries, which then expire by TTL. Other metadata and
  `user` are not: answers are shared within a tenant, as in the exact cache.
- The embedding model's id is in the scope: after a model or quantisation change, old vectors
  are never compared with new ones.
- Images in the last user message are in the scope and also make `semantic_allowed` false: the
  query text would not describe them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..contracts import ChatCompletionRequest, ChatMessage, TextPart
from .embeddings import embedding_model_id

SCOPE_VERSION = 1
KB_VERSION_FIELD = "kb_version"
# Unset temperature means the provider's default, which is 1.0 for OpenAI and Anthropic.
PROVIDER_DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TEMPERATURE = 0.7  # as `config.SemanticCache.max_temperature`


def _last_user_index(request: ChatCompletionRequest) -> int | None:
    for index in range(len(request.messages) - 1, -1, -1):
        if request.messages[index].role == "user":
            return index
    return None


def _has_images(message: ChatMessage) -> bool:
    return isinstance(message.content, list) and any(not isinstance(p, TextPart) for p in message.content)


def _placeholder(message: ChatMessage) -> dict[str, Any]:
    """The query message without its text: role, name and any non-text parts stay in the scope."""
    parts = [] if isinstance(message.content, str | None) else message.content
    images = [p.model_dump(exclude_none=True) for p in parts if not isinstance(p, TextPart)]
    return {"role": message.role, "name": message.name, "query": True, "images": images}


def semantic_scope(tenant: str, model_version: str, request: ChatCompletionRequest) -> str:
    """SHA-256 over everything that must be identical for an answer to be reused by meaning:
    tenant, resolved model version, every message but the last user message's text (system and
    developer prompts, earlier turns), response_format and the answer-shaping generation
    parameters except temperature, and the knowledge-base version tag from
    `metadata["kb_version"]`, and the embedding model (vectors of two models are not comparable).
    See the module doc for why each is in or out."""
    last_user = _last_user_index(request)
    messages = [
        _placeholder(m) if i == last_user else m.model_dump(exclude_none=True) for i, m in enumerate(request.messages)
    ]
    params = request.generation_params()
    params.pop("temperature", None)
    params["output_limit"] = request.output_limit()  # max_tokens and max_completion_tokens are one cap
    params.pop("max_tokens", None)
    params.pop("max_completion_tokens", None)
    material = {
        "v": SCOPE_VERSION,
        "tenant": tenant,
        "model": model_version,
        "messages": messages,
        "params": params,
        "kb": (request.metadata or {}).get(KB_VERSION_FIELD),
        "embedding": embedding_model_id(),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def query_text(request: ChatCompletionRequest) -> str:
    """The text compared by meaning: the last user message's text ("" when there is none)."""
    last_user = _last_user_index(request)
    return "" if last_user is None else request.messages[last_user].text()


def semantic_allowed(request: ChatCompletionRequest, max_temperature: float = DEFAULT_MAX_TEMPERATURE) -> bool:
    """Whether this request may be answered by meaning at all.

    No when its temperature (unset counts as the providers' default, 1.0) is above the tenant's
    limit — the caller asked for variety, not a stored answer; when there is no user message or its
    text is blank; or when the last user message carries images, which the query text does not
    describe; or when the request uses tools (the answer depends on the tools offered and on their
    results, which the query text does not hold: such requests are cached exactly only).
    Nor when it asks for several choices (`n` > 1): variety again, and a stored answer is one.)"""
    if request.uses_tools() or request.choices_wanted() > 1:
        return False
    temperature = PROVIDER_DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
    if temperature > max_temperature:
        return False
    last_user = _last_user_index(request)
    if last_user is None:
        return False
    message = request.messages[last_user]
    return bool(message.text().strip()) and not _has_images(message)
