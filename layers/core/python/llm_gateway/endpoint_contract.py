"""Wire contract between the `sagemaker` provider and the model endpoint (`model_server`).

`POST /invocations` takes an `InvocationRequest` as JSON. With `stream: false` it answers one
`InvocationResponse`. With `stream: true` it answers newline-delimited JSON (`application/x-ndjson`):
zero or more `StreamEvent`s carrying `delta`, and a last one carrying `finish_reason` and `usage`.
The same bytes travel through SageMaker's `InvokeEndpoint` / `InvokeEndpointWithResponseStream`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EndpointFinish = Literal["stop", "length"]
NDJSON = "application/x-ndjson"


class EndpointMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class InvocationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[EndpointMessage] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None
    json_mode: bool = False
    stream: bool = False
    # Requests share reusable prefix KV-cache blocks only within one salt (the gateway sends a
    # digest of the tenant); no salt: the endpoint's shared scope.
    cache_salt: str | None = Field(default=None, min_length=1, max_length=128)


class EndpointUsage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class InvocationResponse(BaseModel):
    text: str
    finish_reason: EndpointFinish
    usage: EndpointUsage
    model: str


class StreamEvent(BaseModel):
    delta: str = ""
    finish_reason: EndpointFinish | None = None
    usage: EndpointUsage | None = None
