"""A zero-latency provider that repeats the last user message: smoke tests and overhead benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

from ..config import ModelConfig
from ..contracts import ChatCompletionRequest
from .base import ProviderReply, StreamDelta, output_limit


class EchoProvider:
    name = "echo"

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        words = request.messages[-1].text().split()
        limit = output_limit(request, model)
        prompt_tokens = sum(len(m.text().split()) + 4 for m in request.messages)
        reply = words[:limit]
        return ProviderReply(
            text=" ".join(reply),
            finish_reason="length" if len(words) > limit else "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(reply),
        )

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        reply = self.complete(request, model_id, model)
        for i, word in enumerate(reply.text.split()):
            yield StreamDelta(text=word if i == 0 else " " + word)
        yield StreamDelta(
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
