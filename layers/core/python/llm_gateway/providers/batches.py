"""Provider batch APIs, for batch jobs: OpenAI Batch (a JSONL file uploaded through the Files API,
then a batch over it) and Anthropic Message Batches (the requests in one call). Answers come back
within 24 hours at half the price.

A provider that has one implements `BatchAPI`; the batch job (`llm_gateway.batch`) submits one
provider batch per model and job, polls it, and collects the answers per line. `custom_id`s are the
lines' request ids (`<job>-<index>`: within both APIs' 64-character `[A-Za-z0-9_-]` rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from ..config import ModelConfig
from ..contracts import ChatCompletionRequest
from ..errors import ProviderBadRequest, ProviderError, ProviderThrottled, ProviderUnavailable
from .base import ProviderReply

BatchState = Literal["running", "ended", "failed"]


class BatchItem(NamedTuple):
    custom_id: str
    request: ChatCompletionRequest  # as the model gets it (`GatewayState.model_request()`)


class BatchResults(NamedTuple):
    replies: dict[str, ProviderReply]
    errors: dict[str, ProviderError]


@runtime_checkable
class BatchAPI(Protocol):
    def submit_batch(self, items: Sequence[BatchItem], model_id: str, model: ModelConfig, label: str) -> str:
        """Create a provider batch of `items`; returns its id. `label` names it for `find_batch`."""
        ...

    def find_batch(self, label: str, model_id: str, model: ModelConfig) -> str | None:
        """A live batch created earlier with `label` (a job resumed after a crash between creating
        its batch and recording the id), if the API can tell."""
        ...

    def batch_state(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchState: ...

    def batch_results(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchResults:
        """Every answered or failed request of an ended batch, by custom_id."""
        ...


def error_for_status(status: int, message: str, model_id: str) -> ProviderError:
    """A batch line's upstream error as the online path would have classified it."""
    if status == 429:
        return ProviderThrottled(f"model '{model_id}' is rate limited upstream")
    if status >= 500 or status in (408, 409):
        return ProviderUnavailable(f"model '{model_id}' failed upstream (HTTP {status})")
    return ProviderBadRequest(f"model '{model_id}' rejected the request: {message[:500]}")
