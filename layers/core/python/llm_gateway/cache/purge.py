"""Purging cached answers: a tenant's whole cache, one model version's, one knowledge-base version's
or one system prompt's, from the exact cache and the semantic index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import PiiGuard
from .keys import kb_tag, prompt_tag

if TYPE_CHECKING:
    from ..deps import Deps
    from ..ports import ExactCache
    from ..semantic.index import SemanticIndex


class PurgeRequest(BaseModel):
    """What to purge: a tenant's whole cache, or only one model version's entries, or only those
    answered from one knowledge-base version (`metadata.kb_version`), or only those answered under
    one system prompt (its exact text)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    kb_version: str | None = Field(default=None, min_length=1)
    system_prompt: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_selector(self) -> PurgeRequest:
        chosen = [name for name in ("model", "kb_version", "system_prompt") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"purge by one of model, kb_version or system_prompt, not {' and '.join(chosen)}")
        return self

    @property
    def tag(self) -> str | None:
        if self.kb_version is not None:
            return kb_tag(self.kb_version)
        return None if self.system_prompt is None else prompt_tag(self.system_prompt)


def purge_stores(
    cache: ExactCache, semantic: SemanticIndex | None, purge: PurgeRequest, pii: PiiGuard | None = None
) -> int:
    """Remove the cached answers `purge` selects from the exact cache and the semantic index;
    return how many went (0 when the store cannot count, e.g. Momento). Every process sharing the
    store stops serving them once this returns (the local semantic index: purge markers).

    `pii`: the tenant's PII policy. Caches tag answers by the system prompt as the model saw it,
    masked; a purge by a system prompt that holds PII removes the answers under both forms."""
    tags = {purge.tag}
    if pii is not None and purge.system_prompt is not None:
        from ..guard.step import masked_opening_text  # the guard's masking, only for this kind of purge

        tags.add(prompt_tag(masked_opening_text(purge.system_prompt, pii)))
    removed = 0
    for tag in sorted(tags, key=str):
        removed += cache.purge(purge.tenant, purge.model, tag)
        if semantic is not None:
            removed += semantic.purge(purge.tenant, purge.model, tag)
    return removed


def purge_caches(deps: Deps, purge: PurgeRequest) -> int:
    """`purge_stores` on the runtime's stores, counted in the metrics."""
    pii = deps.config.tenants[purge.tenant].guards.pii if purge.tenant in deps.config.tenants else None
    removed = purge_stores(deps.cache, deps.semantic, purge, pii)
    deps.metrics.count("cache_purges", tenant=purge.tenant)
    return removed
