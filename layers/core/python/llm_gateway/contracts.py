"""Models that cross step boundaries.

The OpenAI-compatible request and response, the streaming chunk, the OpenAI-style error body,
`TenantContext`, one result model per step and `GatewayState`, the envelope every step receives.
In Step Functions each task writes its result at `$.<step>`, so the envelope is the state itself.

Unknown fields: the request rejects unknown top-level fields with a 400 naming the field, as the
OpenAI API does ("Unrecognized request argument supplied"); nothing is silently dropped. Responses
and chunks are built by the gateway and forbid extras too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]
PROMPT_ROLES = ("system", "developer")  # the tenant's own instructions, not the conversation
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]
CacheStatus = Literal["exact", "semantic", "miss", "bypass"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (`5.0`) is the integer JSON Schema says it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A request's integer: a JSON integer, or a number with no fraction; never a string or a boolean.
# (Bounds go before the validator, or the JSON schema shows them as unknown keywords.)
JsonInt = Annotated[int, BeforeValidator(_integral)]
PositiveJsonInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class _Request(_Strict):
    """A part of the client's request: JSON types as its JSON schema states them, nothing coerced
    (`"5"` is not 5, `1` is not true, `true` is not 1.0); a number with no fraction is an integer."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]

# A function's name as the providers accept it (OpenAI and Anthropic: letters, digits, _ and -).
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128
MAX_TOOL_CALL_ID = 256


class FunctionCall(_Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str  # JSON text, as the model wrote it (it may be invalid JSON: the caller judges)


class ToolCall(_Request):
    """A call the model asked for (an assistant message's `tool_calls`)."""

    id: str = Field(min_length=1, max_length=MAX_TOOL_CALL_ID)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    # The content rules below, in JSON schema too, so API Gateway's request model enforces them.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "allOf": [
                {
                    "anyOf": [
                        {"properties": {"role": {"enum": ["assistant"]}}},
                        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
                    ]
                },
                {
                    "anyOf": [
                        {"properties": {"role": {"not": {"enum": ["tool"]}}}},
                        {"required": ["tool_call_id"]},
                    ]
                },
            ]
        },
    )

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOLS)] | None = None  # assistant
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=MAX_TOOL_CALL_ID)  # tool: answers it

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"content is required for role '{self.role}'")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        return self

    def text(self) -> str:
        """The message's text, text parts joined; images contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class JsonSchemaFormat(_Request):
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class FunctionDefinition(_Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=4096)
    # A JSON schema of the arguments: checked when the request arrives as a response_format's schema
    # is (`output_format.check_schema`), then passed to the model's provider.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(_Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatCompletionRequest(_Request):
    """OpenAI `POST /v1/chat/completions` body (the subset the gateway honours)."""

    # The scope a self-hosted endpoint keeps this request's reusable KV-cache blocks in: a digest
    # of the tenant, set by `GatewayState.model_request`; never serialized.
    _cache_scope: str | None = PrivateAttr(default=None)

    @property
    def cache_scope(self) -> str | None:
        return self._cache_scope

    def scoped(self, scope: str) -> ChatCompletionRequest:
        """A copy of the request in KV-cache scope `scope`."""
        copy = self.model_copy()
        copy._cache_scope = scope
        return copy

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: PositiveJsonInt | None = None
    max_completion_tokens: PositiveJsonInt | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: Annotated[int, Field(ge=1, le=128), BeforeValidator(_integral)] | None = None  # `limits.max_choices` caps it
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: JsonInt | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDefinition], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    # Gateway extension (openai SDK: `extra_body={"context": [...]}`): the passages a RAG answer
    # must rest on. The model receives them in a system message; the groundedness check
    # (`guards.grounded`) scores the answer's claims against them.
    context: Annotated[list[Annotated[str, Field(min_length=1, max_length=20_000)]], Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: each function name may be defined once")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names '{choice.function.name}', which tools does not define")
        if choice is not None and choice != "none" and not names:
            raise ValueError("tool_choice needs tools")
        return self

    def uses_tools(self) -> bool:
        """The request defines tools, or its conversation holds tool calls or their results."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

    def output_limit(self) -> int | None:
        """The caller's cap on generated tokens (`max_completion_tokens` wins over `max_tokens`)."""
        return self.max_completion_tokens or self.max_tokens

    def choices_wanted(self) -> int:
        """How many choices the caller asked for (`n`, 1 when unset)."""
        return self.n or 1

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def generation_params(self) -> dict[str, Any]:
        """Everything except messages/model/stream/user/metadata that shapes the answer."""
        return self.model_dump(
            exclude={"model", "messages", "stream", "stream_options", "user", "metadata"},
            exclude_none=True,
            by_alias=True,
        )


BREVITY_INSTRUCTION = "Answer briefly, in a few sentences at most."


def context_prompt(passages: list[str]) -> str:
    """The system message that carries a request's RAG context to the model."""
    numbered = "\n\n".join(f"[{i}] {passage}" for i, passage in enumerate(passages, start=1))
    return (
        "Answer from the context below only. If it does not hold the answer, say that you do not know.\n\n"
        f"Context:\n{numbered}"
    )


MAX_EMBEDDING_INPUTS = 2048


class EmbeddingRequest(_Request):
    """OpenAI `POST /v1/embeddings` body (text inputs; token-id arrays are refused)."""

    model: str = Field(min_length=1, max_length=256)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveJsonInt | None = None
    user: str | None = Field(default=None, max_length=256)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(_Strict):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32 (`encoding_format`)


class EmbeddingUsage(_Strict):
    prompt_tokens: int
    total_tokens: int
    cost_usd: float = 0.0


class EmbeddingList(_Strict):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    cost_usd: float = 0.0

    @classmethod
    def of(cls, prompt: int, completion: int, cached: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        )


class AssistantMessage(_Strict):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Strict):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(_Strict):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None

    def text(self) -> str:
        return self.choices[0].message.content or ""


class FunctionCallDelta(_Strict):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Strict):
    """A piece of a streamed tool call: the first piece of call `index` carries its id, type and
    name; the following ones carry more of its arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChunkDelta(_Strict):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Strict):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Strict):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ErrorDetail(_Strict):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(_Strict):
    """OpenAI-style error envelope: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


# --------------------------------------------------------------------------- tenant and state


def tenant_cache_scope(tenant: str) -> str:
    """The tenant as a self-hosted endpoint's prefix cache sees it: a digest, not the name."""
    return hashlib.sha256(f"kv-scope:{tenant}".encode()).hexdigest()[:32]


class TenantContext(_Strict):
    """Who is calling, as resolved by the guard from the API key."""

    tenant: str
    key_id: str
    user: str | None = None


class CallerContext(_Strict):
    """What the edge (local server or API Gateway) knows before the chain runs.

    The raw API key never enters the state: the edge hashes it.
    """

    api_key_sha256: str | None = None
    client_ip: str | None = None
    cache_control: str | None = None
    body_bytes: int = 0
    # A line of a batch job: the tenant its file was uploaded for (the bucket prefix, checked by
    # the batch submitter); no API key, no online rate limits. Never set from a client request.
    batch_tenant: str | None = None
    # `llm-gateway replay`: the request this one runs again (kept in its trace, so that a sample of
    # traffic never picks a replay). Never set from a client request.
    replay_of: str | None = None
    # An eval run or a replay: never assigned to a rollout's or an experiment's arm (its requests
    # would steer their gates). Never set from a client request.
    offline: bool = False


class GuardDecision(_Strict):
    """One guard layer's verdict on a request: what it decided, its score and why."""

    layer: str
    # log: a dry run's "would have blocked" — recorded (audit, metrics), the request goes on as if passed
    action: Literal["pass", "flag", "mask", "block", "log"]
    score: float | None = None
    reason: str | None = None


class RouteResult(_Strict):
    route: str
    candidates: list[str] = Field(min_length=1)
    max_tokens: int | None = None  # the route's cap on generated tokens
    brief: bool = False  # add the brevity instruction (a simple request on a `brief_simple` route)
    complexity: float | None = None  # the complexity router's score (routes with `complexity`)
    pinned: bool = False  # a metadata pin chose the model
    # a rollout's arm for this caller (`<rollout id>:candidate` or `:baseline`), or an experiment's
    # variant (`<experiment id>:<variant>`), with the variant's parameters and system prompt
    variant: str | None = None
    params: dict[str, float | int] | None = None
    system_prompt: str | None = None


class GuardResult(_Strict):
    outcome: Literal["allowed", "blocked"]
    tenant: TenantContext | None = None
    layer: str | None = None
    reason: str | None = None
    message: str | None = None  # a blocked request's refusal as the client reads it (default: generic)
    decisions: list[GuardDecision] = Field(default_factory=list)
    # PII masking: the messages as the model and the caches must see them (None: unchanged), and
    # the original values of the placeholders the tenant lets the answer restore. Request-scoped:
    # never logged, never stored (Step Functions logs exclude execution data).
    masked_messages: list[ChatMessage] | None = None
    masked_context: list[str] | None = None  # the RAG passages, masked the same way (None: unchanged)
    restorable: dict[str, str] = Field(default_factory=dict)
    saved_tokens: int = 0  # prompt compression's estimate of the input tokens it removed
    # An allowed request's planned route (`routing.step.plan_route`), worked out once here and read
    # by the cache (its key's model) and the router (which keeps the candidates that can take it now).
    route: RouteResult | None = None


class CacheResult(_Strict):
    status: CacheStatus
    key: str | None = None
    score: float | None = None  # semantic hits: the verifier's calibrated probability
    similarity: float | None = None  # semantic hits: cosine between the query and the cached one
    # On a miss that may be stored by meaning: the scope and the query's embedding (base64 float32,
    # `semantic.index.encode_vector`), so finish stores it without embedding the query again.
    semantic_scope: str | None = None
    query_vector: str | None = None
    store: bool = True
    response: ChatCompletion | None = None
    route: str | None = None  # hits: the route the request resolved through (the router does not run)


class Attempt(_Strict):
    model: str
    outcome: Literal["ok", "throttled", "unavailable", "timeout", "bad_request"]
    latency_ms: float


class InvokeResult(_Strict):
    model: str
    provider: str
    response: ChatCompletion
    attempts: list[Attempt]
    latency_ms: float


ModerationOutcome = Literal["passed", "filtered", "redacted"]


class ChoiceModeration(_Strict):
    """The output checks' verdict on one choice of an answer with several (`n` > 1)."""

    outcome: ModerationOutcome
    layer: str | None = None
    rule: str | None = None
    content: str | None = None  # "redacted": the choice's text as the client receives it


class ModerateResult(_Strict):
    """The verdict on the answer; with several choices, the worst choice's (filtered over redacted
    over passed), each choice's own in `choices`."""

    outcome: ModerationOutcome
    layer: str | None = None
    rule: str | None = None
    content: str | None = None  # "redacted": the answer's text as the client receives it
    decisions: list[GuardDecision] = Field(default_factory=list)  # harmful-content cascade on the answer
    choices: list[ChoiceModeration] | None = None


class FinishResult(_Strict):
    """The end of every path: what was recorded and the HTTP answer (the API front returns it as is)."""

    cached: bool = False
    cost_usd: float = 0.0
    status: int = 200
    response: ChatCompletion | None = None
    error: ErrorBody | None = None
    retry_after_s: float | None = None


class StepError(BaseModel):
    """What a Step Functions Catch puts at `$.error` when a task raises."""

    model_config = ConfigDict(extra="ignore")

    Error: str
    Cause: str | None = None


class GatewayState(_Strict):
    """The envelope passed along the chain; each step's result lands under its own name."""

    request_id: str
    received_at: float
    request: ChatCompletionRequest
    caller: CallerContext
    guard: GuardResult | None = None
    cache: CacheResult | None = None
    router: RouteResult | None = None
    invoke: InvokeResult | None = None
    moderate: ModerateResult | None = None
    finish: FinishResult | None = None
    error: StepError | None = None
    first_token_at: float | None = None  # a streamed answer: when its first text reached the client
    timings_ms: dict[str, float] = Field(default_factory=dict)  # each step's time, where the runner timed it
    _ended_at: float | None = PrivateAttr(default=None)

    def ended_at(self, clock: Callable[[], float]) -> float:
        """When the request ended: the first time it is asked, so that its record, its metrics and
        its trace give it one latency."""
        if self._ended_at is None:
            self._ended_at = clock()
        return self._ended_at

    def model_request(self, route: RouteResult | None = None) -> ChatCompletionRequest:
        """The request as the caches and the model see it: with the guard's PII masking applied,
        the RAG context (if any) and the route's brevity instruction as system messages after the
        tenant's own, and the route's output cap. `route`: the router's result before it is
        stored (the cache step keys answers by the request the router's choice will send)."""
        router = route if route is not None else self.router
        request = self.request
        if self.guard is not None and self.guard.masked_messages is not None:
            request = request.model_copy(update={"messages": self.guard.masked_messages})
        context = self.context_passages()
        extra = [context_prompt(context)] if context else []
        if router is not None and router.brief:
            extra.append(BREVITY_INSTRUCTION)
        if router is not None and router.system_prompt is not None:  # an experiment's variant
            extra.insert(0, router.system_prompt)
        if extra:
            messages = list(request.messages)
            at = next((i for i, m in enumerate(messages) if m.role not in PROMPT_ROLES), len(messages))
            messages[at:at] = [ChatMessage(role="system", content=text) for text in extra]
            request = request.model_copy(update={"messages": messages, "context": None})
        if router is not None and router.params:
            request = request.model_copy(update=router.params)
        cap = router.max_tokens if router is not None else None
        if cap is not None and (request.output_limit() or cap) >= cap:
            request = request.model_copy(update={"max_tokens": cap, "max_completion_tokens": None})
        if self.guard is not None and self.guard.tenant is not None:
            request = request.scoped(tenant_cache_scope(self.guard.tenant.tenant))
        return request

    def context_passages(self) -> list[str] | None:
        """The request's RAG passages as models and checks may see them: PII-masked by the guard."""
        if self.guard is not None and self.guard.masked_context is not None:
            return self.guard.masked_context
        return self.request.context

    def tenant(self) -> TenantContext:
        if self.guard is None or self.guard.tenant is None:
            raise RuntimeError("the guard step has not resolved a tenant")
        return self.guard.tenant
