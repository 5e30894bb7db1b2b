"""Gateway configuration: models, tenants, routes, limits — one YAML file validated at start-up.

API keys are stored as SHA-256 hex digests, never in clear. A tenant marked `demo: true` gets a
fresh random key minted by `llm-gateway serve` at each start (printed once, hash kept in memory).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import registry_problems

ProviderName = Literal["openai", "anthropic", "sagemaker", "echo", "embedder"]  # embedder: the packaged one
LOCAL_ENDPOINT = "local"
TOOL_PROVIDERS = ("openai", "anthropic")
EMBEDDING_PROVIDERS = ("embedder", "openai")  # providers whose models call tools unless a model says not


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Config):
    """USD per million tokens; cached input tokens are priced separately."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    # Input tokens written to a provider's prompt cache (Anthropic: 1.25x input); unset: input price.
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """`prompt_tokens` includes the cached (read) and the cache-written tokens."""
        cached_price = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_price = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        written = min(cache_write_tokens, max(0, prompt_tokens - cached_tokens))
        uncached = max(0, prompt_tokens - cached_tokens - written)
        total = uncached * self.input_per_mtok + cached_tokens * cached_price + written * write_price
        total += completion_tokens * self.output_per_mtok
        return round(total / 1_000_000, 10)


class ModelConfig(_Config):
    """One pinned model version and how to reach it."""

    provider: ProviderName
    # `chat` models answer /v1/chat/completions; `embedding` models /v1/embeddings (the packaged
    # all-MiniLM-L6-v2 with provider `embedder`, or an OpenAI embedding model).
    kind: Literal["chat", "embedding"] = "chat"
    provider_model: str | None = None  # the provider's own name; defaults to the gateway's id
    base_url: str | None = None  # OpenAI/Anthropic-compatible base URL override
    api_key_env: str | None = None  # environment variable holding the provider key
    endpoint: str | None = None  # sagemaker: endpoint name, a URL, or "local"
    # `endpoint: local` only: the weights the endpoint `serve` runs for this model serves — a
    # checkpoint directory (its torch engine) or a GGUF file (its llama.cpp engine), such as a
    # student `llm-gateway distill register` wrote; unset, the packaged model. Each distinct
    # `weights` is one more supervised endpoint process.
    weights: str | None = Field(default=None, min_length=1)
    region: str | None = None
    price: Price = Field(default_factory=Price)
    timeout_s: float = Field(default=60.0, gt=0, le=900)
    default_max_tokens: int = Field(default=512, ge=1)
    max_output_tokens: int = Field(default=4096, ge=1)
    # The context window in tokens (messages + completion). The router sends a request only to
    # candidates it can fit and refuses it (400 context_length_exceeded) when none can; unset: the
    # model itself decides. `serve` takes the local endpoint's own n_ctx (its /ping) over this.
    context_tokens: int | None = Field(default=None, ge=1)
    # Provider prompt-caching hints (Anthropic cache_control breakpoints, OpenAI prompt_cache_key).
    prompt_cache: bool = True
    # Whether the model takes `tools` and tool messages; unset, its provider's default (OpenAI and
    # Anthropic models do; the self-hosted endpoint and echo do not). A request with tools goes only
    # to candidates that do, and is refused (400 `tools_unsupported`) when none does.
    tools: bool | None = None
    # Self-hosted endpoints: one instance's price and measured aggregate throughput, for
    # `llm-gateway cost-report` (when self-hosting beats an API model).
    hourly_usd: float | None = Field(default=None, gt=0)
    tokens_per_second: float | None = Field(default=None, gt=0)
    # Batch jobs: send this model's lines to the provider's batch API (OpenAI Batch, Anthropic
    # Message Batches; answers within 24 h) or answer them a few at a time like online requests.
    batch_api: bool = True
    # What a line answered through the provider's batch API costs; unset, half the online price
    # (both APIs' discount). Lines answered directly cost the online price.
    batch_price: Price | None = None
    # The registry (`registry`): where this version is in its life (a route may not name a retired
    # one), the date its provider retires it (routes naming it are warned of within 30 days), and
    # whether its provider name may be a moving alias such as `gpt-4o` (refused unless allowed).
    lifecycle: Literal["candidate", "shadow", "canary", "live", "retired"] = "live"
    retires_on: date | None = None
    allow_unpinned: bool = False
    # The operator's statement that the provider's terms allow training other models on this
    # model's outputs (`llm-gateway distill collect` refuses the answers of a model without it).
    allows_training: bool = False

    @model_validator(mode="after")
    def _kind_fits_provider(self) -> ModelConfig:
        if self.provider == "embedder" and self.kind != "embedding":
            raise ValueError("provider 'embedder' serves embedding models only (kind: embedding)")
        if self.kind == "embedding" and self.provider not in EMBEDDING_PROVIDERS:
            raise ValueError(f"embedding models are served by {' or '.join(EMBEDDING_PROVIDERS)}")
        return self

    def supports_tools(self) -> bool:
        return self.tools if self.tools is not None else self.provider in TOOL_PROVIDERS

    def uses_batch_api(self) -> bool:
        return self.batch_api and self.provider in ("openai", "anthropic")

    def batch_prices(self) -> Price:
        if self.batch_price is not None:
            return self.batch_price
        cached = self.price.cached_input_per_mtok
        return Price(
            input_per_mtok=self.price.input_per_mtok / 2,
            cached_input_per_mtok=None if cached is None else cached / 2,
            output_per_mtok=self.price.output_per_mtok / 2,
        )

    @model_validator(mode="after")
    def _endpoint_for_sagemaker(self) -> ModelConfig:
        if self.provider == "sagemaker" and not self.endpoint:
            raise ValueError("a sagemaker model needs `endpoint` (endpoint name, URL or 'local')")
        if self.weights is not None and (self.provider != "sagemaker" or self.endpoint != LOCAL_ENDPOINT):
            raise ValueError("`weights` are served by the local endpoint only (provider: sagemaker, endpoint: local)")
        return self


class MetadataPin(_Config):
    """Requests whose `metadata` holds every one of these key/value pairs go to `model`."""

    metadata: dict[str, str] = Field(min_length=1)
    model: str

    def matches(self, metadata: dict[str, str] | None) -> bool:
        return metadata is not None and all(metadata.get(k) == v for k, v in self.metadata.items())


class ComplexityRouting(_Config):
    """Sends each request to the cheapest of `models` its complexity allows (routing.complexity).

    One knob: `small_share`, the share of traffic kept off the largest model (split evenly between
    the cheaper ones); or `max_cost_per_1k_usd`, a target cost per 1,000 requests of
    `prompt_tokens` + `completion_tokens`, turned into the share that meets it; or `thresholds`,
    score cuts computed from the tenant's own prompts by `llm-gateway route-calibrate`."""

    models: list[str] = Field(min_length=2)  # cheapest first; the last is the large model
    small_share: float | None = Field(default=None, ge=0, le=1)
    max_cost_per_1k_usd: float | None = Field(default=None, gt=0)
    thresholds: list[Annotated[float, Field(ge=0, le=1)]] | None = None
    prompt_tokens: int = Field(default=500, ge=1)
    completion_tokens: int = Field(default=200, ge=0)

    @model_validator(mode="after")
    def _one_knob(self) -> ComplexityRouting:
        knobs = [k for k in ("small_share", "max_cost_per_1k_usd", "thresholds") if getattr(self, k) is not None]
        if len(knobs) != 1:
            raise ValueError("complexity routing takes exactly one of small_share, max_cost_per_1k_usd, thresholds")
        if len(set(self.models)) != len(self.models):
            raise ValueError("complexity routing models must differ")
        if self.thresholds is not None and (
            len(self.thresholds) != len(self.models) - 1 or self.thresholds != sorted(self.thresholds)
        ):
            raise ValueError("thresholds: one ascending score per model after the first")
        return self


class SystemPrompt(_Config):
    """The tenant's own instructions for the model. `prepend`: before the caller's system and
    developer messages; `enforce`: instead of them (a caller cannot set its own)."""

    text: str = Field(min_length=1, max_length=100_000)
    mode: Literal["prepend", "enforce"] = "prepend"


class ToolPolicy(_Config):
    """Which functions a tenant's callers may offer the model, by name: `allow` (unset: any) less
    `deny`. A request defining another is refused (400 `tool_not_allowed`)."""

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)

    def refused(self, name: str) -> bool:
        return name in self.deny or (self.allow is not None and name not in self.allow)


class Conversations(_Config):
    """The Responses API's conversation store for a tenant: whether responses are kept (a request's
    `store: true`) and for how long; `previous_response_id` continues only a kept one."""

    store: bool = True
    retention_days: float = Field(default=30, gt=0, le=3650)


class Traces(_Config):
    """The tenant's request traces (`GET /v1/traces/{id}`, feedback): kept for `retention_days`;
    the prompt and answer only with `store_content` (PII masked per the tenant's policy)."""

    enabled: bool = True
    retention_days: float = Field(default=30, gt=0, le=3650)
    store_content: bool = False
    # false: the tenant's requests are left out of the deployment's OpenTelemetry export (`telemetry`)
    export: bool = True


class Training(_Config):
    """Whether the tenant's traffic may become training data (`llm-gateway distill collect`): its
    answers kept in its traces (`traces.store_content`, PII masked), only with `opt_in`."""

    opt_in: bool = False
    # The least quality a student may keep to be registered (`llm-gateway distill register`): its
    # pass rate on the held-out test split over the teacher's, both scored against the teacher's
    # stored answers.
    min_quality_ratio: float = Field(default=0.9, gt=0, le=1)


class ShadowConfig(_Config):
    """A sampled copy of the route's answered requests sent to `model` after the user's answer
    (`experiments.shadow`): never shown, never cached, at most `budget_usd_per_day` a tenant."""

    model: str = Field(min_length=1)
    sample: float = Field(gt=0, le=1)  # the share of answered requests copied
    budget_usd_per_day: float = Field(default=1.0, ge=0)


class RouteConfig(_Config):
    # With `complexity`, `model` defaults to its largest model (used for requests it does not score).
    model: str = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    complexity: ComplexityRouting | None = None
    pins: list[MetadataPin] = Field(default_factory=list)  # the first match wins over complexity
    # Output length policy: a cap on generated tokens (the request's own limit counts when lower;
    # an answer cut by it ends with finish_reason "length"), and a brevity instruction for simple
    # requests (a single short question without code).
    max_tokens: int | None = Field(default=None, ge=1)
    brief_simple: bool = False
    system_prompt: SystemPrompt | None = None  # this route's own, over the tenant's
    shadow: ShadowConfig | None = None  # a candidate model answering copies of the route's requests

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model"):
            complexity = data.get("complexity")
            if isinstance(complexity, ComplexityRouting):
                complexity = complexity.model_dump()
            models = complexity.get("models") if isinstance(complexity, dict) else None
            if not models or not isinstance(models, list):
                raise ValueError("a route needs `model` (or `complexity` with its models)")
            data = {**data, "model": models[-1]}
        return data

    def candidates(self) -> list[str]:
        return self.candidates_from(self.model)

    def candidates_from(self, first: str) -> list[str]:
        """`first`, then the fallbacks (without repeating it)."""
        return [first, *[m for m in self.fallbacks if m != first]]

    def models(self) -> list[str]:
        """Every model the route may call."""
        tiers = self.complexity.models if self.complexity else []
        return list(dict.fromkeys([*self.candidates(), *tiers, *(pin.model for pin in self.pins)]))


class RateLimit(_Config):
    """Token bucket: `requests_per_minute` refill rate, `burst` bucket size."""

    requests_per_minute: float = Field(gt=0)
    burst: int = Field(default=0, ge=0)

    def capacity(self) -> int:
        return self.burst or max(1, int(self.requests_per_minute // 6))


class Blocklist(_Config):
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(f"(?:{pattern})")  # as it will sit inside the combined regex
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return patterns

    def is_empty(self) -> bool:
        return not self.keywords and not self.patterns


class ApiKey(_Config):
    id: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SemanticCache(_Config):
    """Per-tenant semantic reuse: off unless enabled; a target precision, not a raw cosine."""

    enabled: bool = False
    target_precision: float = Field(default=0.95, gt=0.5, lt=1.0)
    max_temperature: float = Field(default=1.0, ge=0, le=2)  # no reuse for more random requests (unset = 1.0)
    top_k: int = Field(default=5, ge=1, le=50)  # candidates the verifier looks at


class InjectionGuard(_Config):
    """Prompt-injection / jailbreak detection on user and tool messages (`guard.injection`)."""

    enabled: bool = False
    # block: refuse; flag: let it through, queue it for review; log: a dry run (let it through,
    # record "would have blocked" in the audit record and metrics, queue nothing).
    action: Literal["block", "flag", "log"] = "block"
    # Default: the shipped classifier's threshold (benign false-positive rate <= 2 % on validation).
    threshold: float | None = Field(default=None, gt=0, lt=1)


PiiAction = Literal["allow", "mask", "reject"]
PII_ENTITY_TYPES = ("CREDIT_CARD", "US_SSN", "IBAN", "EMAIL", "PHONE", "IP_ADDRESS", "PERSON", "LOCATION")


class PiiGuard(_Config):
    """PII in the conversation (`guard.pii`): per entity type allow it, mask it (the model sees a
    placeholder such as `[EMAIL_1]`) or reject the request. System and developer prompts are the
    tenant's own and are not scanned."""

    enabled: bool = False
    # PERSON and LOCATION need named-entity recognition (spaCy, the `ner` extra): ~6 ms for a
    # sentence, ~40 ms for 1,000 characters on one CPU core; the structured types take < 1 ms.
    ner: bool = False
    default: PiiAction = "mask"
    entities: dict[str, PiiAction] = Field(default_factory=dict)  # per-type overrides of `default`
    # Masked types whose original values are put back where the answer repeats their placeholder.
    restore: list[str] = Field(default_factory=list)
    # PII of the watched structured types that the answer itself contains (the model's invention,
    # or values from the system prompt or context): redact to [REDACTED_EMAIL], withhold the
    # answer (content_filter), or allow.
    answers: Literal["redact", "withhold", "allow"] = "redact"

    @field_validator("entities", "restore")
    @classmethod
    def _known_types(cls, value: Any) -> Any:
        unknown = sorted(set(value) - set(PII_ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown PII entity types {unknown}; known: {list(PII_ENTITY_TYPES)}")
        return value

    def action(self, entity: str) -> PiiAction:
        return self.entities.get(entity, self.default)


class HarmfulGuard(_Config):
    """Harmful-content moderation (`guard.harmful`): tier 2 classifier, tier 3 judge, tier 4 review.

    Tier 2 scores the user messages (`input`) and the answer (`output`). Below the uncertain band
    a text passes, above it the action applies; inside it the judge decides, when one is
    configured. Without a judge, or when the judge fails or answers out of format, the tier 2
    threshold decides and the text is also queued for human review. Defaults: the shipped
    classifier's threshold and band (see `moderation.harmful`)."""

    enabled: bool = False
    input: bool = True
    output: bool = True
    # block: refuse (input) or withhold (output); flag: let it through, queue it for review; log: a
    # dry run (let it through, record "would have blocked", queue nothing), on input and output.
    action: Literal["block", "flag", "log"] = "block"
    threshold: float | None = Field(default=None, gt=0, lt=1)
    band: tuple[float, float] | None = None  # [escalate at or above, act at or above]
    judge_model: str | None = None  # a model id from `models`

    @field_validator("band")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1] < 1:
            raise ValueError("band must be [low, high] with 0 < low <= high < 1")
        return value


class GroundedGuard(_Config):
    """RAG answers (`guard.grounded`, for requests that carry `context`): each claim of the answer
    is scored against the context (`moderation.grounding`); unsupported claims flag the answer
    (delivered, queued for review) or withhold it (`content_filter`). Optionally a second model
    checks a sample of answers for factual consistency with the context (or, without context,
    with the question)."""

    enabled: bool = False
    threshold: float = Field(default=0.6, gt=0, lt=1)  # claim support below this: unsupported
    action: Literal["flag", "withhold"] = "flag"
    check_model: str | None = None  # the second model (a model id from `models`)
    check_sample: float = Field(default=0.0, ge=0, le=1)  # share of answers it checks


class Topic(_Config):
    name: str = Field(min_length=1, max_length=80)
    # Requests of this topic in the users' own words; 8 or more make the boundary reliable.
    examples: list[str] = Field(min_length=2, max_length=200)


class TopicGuard(_Config):
    """Per-tenant topics (`guard.topics`): the user's latest message is compared by meaning with
    the examples of the allowed and denied topics and of a packaged library of everyday topics
    (`guard/data/topic_library.json`). A denied topic is refused; with `allowed` topics, so is
    anything nearer to another topic. `allowed_margin` favours the allowed topics (higher: fewer
    wrong refusals of on-topic requests, more off-topic requests let through)."""

    enabled: bool = False
    allowed: list[Topic] = Field(default_factory=list)
    denied: list[Topic] = Field(default_factory=list)
    # The client's refusal; {topic} is the topic the request was matched to, {allowed} the allowed ones.
    refusal: str = Field(default="I can only help with {allowed}. I cannot help with {topic}.", max_length=500)
    allowed_margin: float = Field(default=0.05, ge=0, le=0.5)
    # block: refuse with `refusal`; log: a dry run (answer it, record "would have refused").
    action: Literal["block", "log"] = "block"

    @model_validator(mode="after")
    def _topics(self) -> TopicGuard:
        names = [t.name.lower() for t in [*self.allowed, *self.denied]]
        if len(set(names)) != len(names):
            raise ValueError("topic names must be unique")
        if self.enabled and not names:
            raise ValueError("an enabled topic guard needs allowed or denied topics")
        try:
            self.refusal.format(topic="x", allowed="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("refusal may only use the placeholders {topic} and {allowed}") from exc
        return self


class CopyrightGuard(_Config):
    """Requests to reproduce an existing work word for word (`guard.copyright`): song lyrics, a
    long passage, pages or a chapter of a book, a whole article, poem or script (`guard/copyright.py`).
    Refused with code `copyright` and `refusal`; summaries, analysis, original writing and the
    user's own text pass."""

    enabled: bool = False
    # block: refuse; flag: answer, queue for review; log: a dry run (answer, record "would have refused").
    action: Literal["block", "flag", "log"] = "block"
    refusal: str = Field(
        default=(
            "I can't reproduce song lyrics, book passages or other published texts word for word. "
            "I can summarise the work, discuss it or quote a short line."
        ),
        min_length=1,
        max_length=500,
    )


class Guards(_Config):
    injection: InjectionGuard = Field(default_factory=InjectionGuard)
    pii: PiiGuard = Field(default_factory=PiiGuard)
    harmful: HarmfulGuard = Field(default_factory=HarmfulGuard)
    topics: TopicGuard = Field(default_factory=TopicGuard)
    copyright: CopyrightGuard = Field(default_factory=CopyrightGuard)
    grounded: GroundedGuard = Field(default_factory=GroundedGuard)


class Compression(_Config):
    """Prompt compression (`compression`): lossless whitespace and duplicate-instruction removal,
    and optionally (`lossy_max_tokens`) long user/tool messages cut to their most salient sentences."""

    enabled: bool = False
    lossless: bool = True
    lossy_max_tokens: int | None = Field(default=None, ge=64)


class Budget(_Config):
    """A spending cap over a calendar period (UTC): money, tokens, or both. `scope` tenant: all the
    tenant's requests together; key: each API key; user: each end user (the request's `user`,
    else the key)."""

    scope: Literal["tenant", "key", "user"] = "tenant"
    period: Literal["day", "month"] = "day"
    usd: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _capped(self) -> Budget:
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget needs usd, tokens or both")
        return self


class TenantConfig(_Config):
    api_keys: list[ApiKey] = Field(default_factory=list)
    demo: bool = False
    routes: dict[str, RouteConfig] = Field(min_length=1)
    allowed_models: list[str] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    user_rate_limit: RateLimit | None = None
    ip_rate_limit: RateLimit | None = None  # per client IP (the bucket key holds a digest, not the IP)
    input_blocklist: Blocklist = Field(default_factory=Blocklist)
    output_blocklist: Blocklist = Field(default_factory=Blocklist)
    cache_ttl_s: int | None = Field(default=None, ge=0)
    semantic_cache: SemanticCache = Field(default_factory=SemanticCache)
    guards: Guards = Field(default_factory=Guards)
    budgets: list[Budget] = Field(default_factory=list)
    compression: Compression = Field(default_factory=Compression)
    budget_alerts: list[float] = Field(default_factory=lambda: [0.8])  # shares of a budget that raise an alert
    system_prompt: SystemPrompt | None = None  # the tenant's instructions on every route without its own
    tools: ToolPolicy = Field(default_factory=ToolPolicy)
    conversations: Conversations = Field(default_factory=Conversations)
    traces: Traces = Field(default_factory=Traces)
    training: Training = Field(default_factory=Training)
    alerts: dict[str, float] = Field(default_factory=dict)  # the tenant's thresholds, by alert (`alerts.ALERTS`)

    @field_validator("alerts")
    @classmethod
    def _known_alerts(cls, value: dict[str, float]) -> dict[str, float]:
        from .alerts import ALERT_NAMES

        unknown = sorted(set(value) - set(ALERT_NAMES))
        if unknown:
            raise ValueError(f"unknown alerts {unknown}; known: {list(ALERT_NAMES)}")
        return value

    def system_prompt_for(self, route: str) -> SystemPrompt | None:
        settings = self.routes.get(route)
        return settings.system_prompt if settings is not None and settings.system_prompt else self.system_prompt


class Limits(_Config):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_header_bytes: int = Field(default=32_768, ge=1024)  # all request headers together (431 above)
    max_messages: int = Field(default=512, ge=1)
    max_prompt_chars: int = Field(default=400_000, ge=1)
    max_choices: int = Field(default=8, ge=1, le=128)  # a request's `n` at most (each choice is paid for)


class CacheSettings(_Config):
    enabled: bool = True
    ttl_s: int = Field(default=3600, ge=0)


class Alerting(_Config):
    """How often `serve` evaluates the alerts, and where it posts the ones that start or stop firing."""

    interval_s: float = Field(default=60, ge=1)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OTLP_TRACES_PATH = "/v1/traces"


class Telemetry(_Config):
    """Each request as OpenTelemetry spans, sent to a collector over OTLP/HTTP (protobuf) by the
    process that ran it (`otel.py`; the `otel` extra). Nothing is exported without `otlp_endpoint`.

    `otlp_endpoint`: the collector's base URL (`http://collector:4318`; spans go to its
    `/v1/traces`) or the full traces URL. `headers` go with every export as written; `headers_env`
    names, per header, the environment variable holding its value (tokens stay out of the file)."""

    otlp_endpoint: str | None = None
    service_name: str = Field(default="llm-gateway", min_length=1, max_length=256)
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10, gt=0, le=60)  # one export, retries included (off the request path)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("no credentials in the URL: give them as headers_env")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment in the URL")
        return value

    @field_validator("headers", "headers_env")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name in value if not _HEADER_NAME.match(name))
        if bad:
            raise ValueError(f"not HTTP header names: {bad}")
        return value

    @model_validator(mode="after")
    def _header_values(self) -> Telemetry:
        if any("\r" in v or "\n" in v for v in self.headers.values()):
            raise ValueError("headers: a value may not hold a line break")
        bad = sorted(v for v in self.headers_env.values() if not _ENV_NAME.match(v))
        if bad:
            raise ValueError(f"headers_env: not environment variable names: {bad}")
        both = sorted({h.lower() for h in self.headers} & {h.lower() for h in self.headers_env})
        if both:
            raise ValueError(f"headers and headers_env both set {both}")
        return self

    def traces_url(self) -> str | None:
        """Where spans are posted: the endpoint's `/v1/traces` unless it names that path already."""
        if self.otlp_endpoint is None:
            return None
        base = self.otlp_endpoint.rstrip("/")
        return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH

    def resolved_headers(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The export's headers, `headers_env` read from `environ` now (at start-up): a variable
        that is unset or empty is a `ConfigError`, not a collector that answers 401 for ever."""
        missing = sorted(f"{header} ({var})" for header, var in self.headers_env.items() if not environ.get(var))
        if missing:
            raise ConfigError(f"telemetry.headers_env: environment variables not set: {', '.join(missing)}")
        found = {header: environ[var] for header, var in self.headers_env.items()}
        if any("\r" in v or "\n" in v for v in found.values()):
            raise ConfigError("telemetry.headers_env: a header value may not hold a line break")
        return {**self.headers, **found}


class GatewayConfig(_Config):
    limits: Limits = Field(default_factory=Limits)
    alerting: Alerting = Field(default_factory=Alerting)
    telemetry: Telemetry = Field(default_factory=Telemetry)  # OpenTelemetry export (off unless an endpoint is set)
    admin_api_keys: list[ApiKey] = Field(default_factory=list)  # may call /admin/* (cache purges)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    storage_path: str = ".llm-gateway/gateway.db"  # relative: from $LLM_GATEWAY_DATA_DIR or ~ (cli/store_location.py)
    models: dict[str, ModelConfig] = Field(min_length=1)
    tenants: dict[str, TenantConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        problems = reference_problems(self.models, self.tenants)
        if not problems:
            problems = kind_problems(self.models, self.tenants) + registry_problems(self.models, self.tenants)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def key_owners(self) -> dict[str, tuple[str, str]]:
        """API key digest -> (tenant, key id): who a caller is, from the digest of the key it presented."""
        return {key.sha256: (name, key.id) for name, tenant in self.tenants.items() for key in tenant.api_keys}

    def with_tenant_keys(self, extra: dict[str, list[ApiKey]]) -> GatewayConfig:
        """A copy with more keys added to tenants (used for minted demo keys)."""
        tenants = {
            name: tenant.model_copy(update={"api_keys": [*tenant.api_keys, *extra.get(name, [])]})
            for name, tenant in self.tenants.items()
        }
        return self.model_copy(update={"tenants": tenants})

    def uses_local_endpoint(self) -> bool:
        return any(m.provider == "sagemaker" and m.endpoint == LOCAL_ENDPOINT for m in self.models.values())


def reference_problems(models: Collection[str], tenants: Mapping[str, TenantConfig]) -> list[str]:
    """`location: problem` for each model a tenant names (routes, allowed models, guard models)
    that `models` lacks, and each API key two tenants share."""
    problems = []
    seen_keys: dict[str, str] = {}
    for name, tenant in tenants.items():
        for route_name, route in tenant.routes.items():
            problems += [
                f"tenants.{name}.routes.{route_name}: unknown model '{m}'" for m in route.models() if m not in models
            ]
        problems += [
            f"tenants.{name}.allowed_models: unknown model '{m}'" for m in tenant.allowed_models if m not in models
        ]
        problems += [
            f"tenants.{name}.routes.{route_name}.shadow: unknown model '{route.shadow.model}'"
            for route_name, route in tenant.routes.items()
            if route.shadow is not None and route.shadow.model not in models
        ]
        checkers = {
            "harmful.judge_model": tenant.guards.harmful.judge_model,
            "grounded.check_model": tenant.guards.grounded.check_model,
        }
        for field, checker in checkers.items():
            if checker is not None and checker not in models:
                problems.append(f"tenants.{name}.guards.{field}: unknown model '{checker}'")
        for key in tenant.api_keys:
            if key.sha256 in seen_keys:
                problems.append(f"tenants.{name}: API key '{key.id}' is also used by '{seen_keys[key.sha256]}'")
            seen_keys.setdefault(key.sha256, name)
    return problems


def kind_problems(models: Mapping[str, ModelConfig], tenants: Mapping[str, TenantConfig]) -> list[str]:
    """A route whose models are not all chat models or all embedding models."""
    problems = []
    for name, tenant in tenants.items():
        for route_name, route in tenant.routes.items():
            kinds = {models[m].kind for m in route.models()}
            if len(kinds) > 1:
                problems.append(f"tenants.{name}.routes.{route_name}: mixes chat and embedding models")
    return problems


def hash_key(api_key: str) -> str:
    """SHA-256 hex digest of an API key, the only form in which keys are stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Parse and validate YAML text; raise `ConfigError` with every problem listed by path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid configuration: {problems}") from exc


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    return parse_config(text, str(path))


EXAMPLE_CONFIG = Path(__file__).parent / "example_config.yaml"
