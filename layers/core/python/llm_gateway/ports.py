"""Interfaces of the stores: caches, rate limits, ledgers, audit, review, allow-list, budgets, batch
jobs, objects, conversations and traces. Local adapters live in `adapters.local`, AWS ones in `adapters.aws`.

Interfaces that sit beside their domain code: the semantic index (`semantic.index.SemanticIndex`),
metrics (`observability.MetricsSink`), providers (`providers.base.Provider`,
`providers.batches.BatchAPI`) and the model endpoint (`model_endpoint.EndpointMonitor`). Domain
code depends on the protocols only; it never imports boto3 or momento.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config import RateLimit
from .contracts import ChatCompletion

Outcome = Literal["ok", "cache_hit", "blocked", "filtered", "error"]


class UsageRecord(BaseModel):
    """Tokens and money one request consumed, for billing and budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    ts: float
    tenant: str
    key_id: str
    user_hash: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


class AuditRecord(BaseModel):
    """Who did what, when, and how it ended. Holds no prompt, answer, key or raw user id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    ts: float
    tenant: str | None
    key_id: str | None
    user_hash: str | None
    client_ip_hash: str | None
    route: str | None
    model: str | None
    provider: str | None
    cache: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    latency_ms: float
    attempts: int
    outcome: Outcome
    error_code: str | None
    # Every guard and moderation decision as `layer:action[:score]`, space-separated (no reasons,
    # no text), e.g. "prompt_injection:pass:0.02 pii:mask harmful_content:pass:0.0003".
    guards: str | None = None
    # The reasons of the decisions that flagged, logged or blocked, as JSON `[[kind, layer, action,
    # reason], ...]` (kind `input` or `output`); reasons name scores, categories, topics, entity
    # types and rule indexes, never the text. For `llm-gateway guard-report`.
    guard_reasons: str | None = None
    variant: str | None = None  # a rollout's arm (`<rollout id>:candidate` or `:baseline`)


class ExactCache(Protocol):
    """Exact-match response cache keyed by an opaque digest (see `cache.keys`)."""

    def get(self, key: str, now: float) -> ChatCompletion | None:
        """The stored response if present and not expired at `now`."""
        ...

    def put(
        self,
        key: str,
        tenant: str,
        model: str,
        response: ChatCompletion,
        expires_at: float,
        tags: Sequence[str] = (),
    ) -> None:
        """Store or replace an entry; `tags` (`cache.keys.cache_tags`) are what `purge(tag=...)` matches."""
        ...

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        """Delete a tenant's entries, or only one model version's, or only those carrying `tag`
        (at most one of the two); return how many went, or 0 when the store cannot tell."""
        ...


class RateLimiter(Protocol):
    """Token buckets shared by all gateway processes of a deployment."""

    def acquire(self, bucket: str, limit: RateLimit, now: float) -> float:
        """Take one token; return 0.0 if admitted, else the seconds until a token is available."""
        ...


class UsageLedger(Protocol):
    def record(self, usage: UsageRecord) -> None:
        """Append one usage record."""
        ...


class AuditLog(Protocol):
    def record(self, entry: AuditRecord) -> None:
        """Append one audit record."""
        ...


@dataclass(frozen=True)
class BudgetLimit:
    """One budget a request counts against: its counter key (tenant, scope, period) and caps.
    Money is in nano-dollars (1e-9 USD), integers, so sums are exact."""

    key: str
    max_nusd: int | None
    max_tokens: int | None


@dataclass(frozen=True)
class BudgetUsage:
    spent_nusd: int
    spent_tokens: int
    reserved_nusd: int
    reserved_tokens: int


class BudgetRefused(Exception):
    """A reservation would take a counter past its cap; `key` names it."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class BudgetLedger(Protocol):
    """Reserve-then-settle spending against budgets, atomic across all of a request's budgets."""

    def reserve(
        self, reservation_id: str, limits: Sequence[BudgetLimit], nusd: int, tokens: int, expires_at: float, now: float
    ) -> None:
        """Hold `nusd`/`tokens` on every counter, or on none: `BudgetRefused` when one cap would
        be passed (expired reservations are reclaimed first). Idempotent on `reservation_id`."""
        ...

    def settle(self, reservation_id: str, nusd: int, tokens: int) -> bool:
        """Replace the hold by the actual spend (0, 0 releases it). False when the reservation is
        unknown or already settled or reclaimed (a retried step): nothing changes then."""
        ...

    def reclaim_expired(self, now: float) -> int:
        """Release holds whose reservation expired unsettled (a step that died); returns how many."""
        ...

    def usage(self, key: str) -> BudgetUsage:
        """A counter's spent and reserved amounts."""
        ...

    def claim_alert(self, key: str, share: str) -> bool:
        """True for the first caller only (per counter and share): an alert is raised once."""
        ...


ReviewStatus = Literal["pending", "approved", "rejected"]


class ReviewItem(BaseModel):
    """Something a guard or moderation layer was unsure about, for a person to decide (tier 4).

    `text` is what the layer judged, as the model would see it: masked PII stays masked."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    request_id: str
    tenant: str
    kind: Literal["input", "output"]
    layer: str
    reason: str | None = None
    score: float | None = None
    text: str
    created_at: float
    action: Literal["flag", "block"] = "flag"  # what the layer did: let it through, or refused it
    status: ReviewStatus = "pending"
    reviewer: str | None = None
    decided_at: float | None = None


class ReviewQueue(Protocol):
    def submit(self, item: ReviewItem) -> None:
        """Queue an item (idempotent on `item_id`)."""
        ...

    def items(
        self, status: ReviewStatus | None = "pending", tenant: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        """Items oldest first, filtered by status (None: any) and tenant."""
        ...

    def decide(self, item_id: str, approved: bool, reviewer: str, now: float) -> ReviewItem:
        """Record a decision on a pending item; `KeyError` if unknown, `ValueError` if already decided."""
        ...


def normalised_text(text: str) -> str:
    """A text as the guard allow-list compares it: whitespace runs made one space, ends trimmed
    (nothing else: case, punctuation and PII placeholders count)."""
    return " ".join(text.split())


class AllowedText(BaseModel):
    """A request text a reviewer approved after a classifier layer refused or flagged it: the
    tenant's requests whose latest user message is this text skip the classifier layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    text: str  # as the layer scored it and the queue kept it (PII masked)
    layer: str  # the layer that refused or flagged it
    item_id: str  # the review item it came from
    added_at: float


class GuardAllowList(Protocol):
    """Per-tenant texts the input guard's classifier layers let through (reviewed false refusals)."""

    def add(self, entry: AllowedText) -> bool:
        """Store an entry; False (and no change) when the tenant already allows the same text
        (compared by `normalised_text`)."""
        ...

    def allows(self, tenant: str, text: str) -> bool:
        """Whether `tenant` allows `text` (compared by `normalised_text`); one indexed lookup."""
        ...

    def entries(self, tenant: str | None = None) -> list[AllowedText]:
        """Entries oldest first (None: every tenant's)."""
        ...


BatchJobStatus = Literal["running", "completed", "failed"]
# new: parsed; ready: guarded, not a cache hit, model chosen; submitted: in a provider batch;
# done: answered or refused, charged, its output line known.
BatchLineState = Literal["new", "ready", "submitted", "done"]


class BatchJob(BaseModel):
    """One uploaded batch file: where it came from, how far it is, where its output went."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    tenant: str
    source: str  # the input object's key
    version: str  # the input object's version (S3 version id; locally the content digest)
    status: BatchJobStatus = "running"
    created_at: float
    updated_at: float
    requests: int  # valid lines
    invalid: int  # lines refused at parsing
    results_key: str | None = None
    errors_key: str | None = None
    message: str | None = None  # why the job failed


class BatchLine(BaseModel):
    """One line of a job and its progress. `gateway_state` holds the request's chain state
    between the steps (guard/cache/router before the model, moderate/finish after)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    index: int  # position in the file among all lines (0-based): the output order
    line: int  # 1-based line number in the file
    custom_id: str | None
    state: BatchLineState = "new"
    model: str | None = None
    provider_batch: str | None = None
    status: int | None = None  # HTTP status of the line's answer (200, or the error's)
    body: str | None = None  # the output record's JSON (result or error line)
    gateway_state: str | None = None


class BatchJobs(Protocol):
    def create(self, job: BatchJob, lines: Sequence[BatchLine]) -> bool:
        """Store a new job and its lines; False (and no change) when the job id exists."""
        ...

    def job(self, job_id: str) -> BatchJob | None: ...

    def jobs(self, tenant: str | None = None, limit: int = 100) -> list[BatchJob]:
        """Newest first."""
        ...

    def update_job(self, job_id: str, **changes: object) -> None: ...

    def lines(self, job_id: str, state: BatchLineState | None = None) -> list[BatchLine]:
        """In file order."""
        ...

    def advance(self, job_id: str, index: int, expected: BatchLineState, **changes: object) -> bool:
        """Change a line only if it is still in `expected` state (a resumed or concurrent run
        never moves a line twice); True when this call changed it."""
        ...


class ObjectStore(Protocol):
    """The batch bucket: S3, or a local folder."""

    def get(self, key: str, version: str | None = None) -> tuple[bytes, str]:
        """The object's bytes and version (that version, when given); `KeyError` if there is none."""
        ...

    def put(self, key: str, data: bytes) -> str:
        """Write an object; returns its version."""
        ...


class StoredResponse(BaseModel):
    """One answer of the Responses API as its tenant's conversation store keeps it, PII masked per
    the tenant's policy (`responses_api`). `conversation` is what a later `previous_response_id`
    continues from: the chat messages of every earlier turn, this turn's input and its answer (the
    request's `instructions` excluded: they do not carry over)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    created_at: float
    expires_at: float
    previous_response_id: str | None = None
    response: dict[str, Any]  # the Response object as `GET /v1/responses/{id}` returns it
    input_items: list[dict[str, Any]]  # this turn's input items (`GET /v1/responses/{id}/input_items`)
    conversation: list[dict[str, Any]]

    def packed(self) -> bytes:
        """The stored form: compressed JSON (a conversation's text compresses three to five times)."""
        return zlib.compress(self.model_dump_json().encode(), 6)

    @classmethod
    def unpacked(cls, data: bytes) -> StoredResponse:
        return cls.model_validate_json(zlib.decompress(data))


class ConversationTooLarge(Exception):
    """The stored form of a response exceeds what the store can keep in one item."""


class ConversationStore(Protocol):
    """Responses, partitioned by tenant: a response is found only under the tenant that created
    it, and only until it expires."""

    def put(self, item: StoredResponse) -> bool:
        """Keep a new response; False (and nothing kept) when the response it continues is gone
        (deleted while this one was answered); `ConversationTooLarge` when it cannot be kept."""
        ...

    def get(self, tenant: str, response_id: str, now: float) -> StoredResponse | None:
        """The tenant's response; None when there is none, it expired, or another tenant's it is."""
        ...

    def delete(self, tenant: str, response_id: str) -> int:
        """Remove the tenant's response and every response that continues from it (each holds its
        turns); how many were removed (0: there was none)."""
        ...


class Feedback(BaseModel):
    """A user's verdict on one answer: thumbs (-1 or +1) or a rating (1 to 5), and an optional
    comment (PII masked per the tenant's policy). `satisfaction` maps either to [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["thumbs", "rating", "task"]  # task: whether the answer did the job (0 or 1), for experiments
    score: int
    comment: str | None = None
    at: float

    @property
    def satisfaction(self) -> float:
        """Thumbs and ratings in [0, 1]; a task outcome is its score (0 or 1)."""
        if self.kind == "task":
            return float(self.score)
        return (self.score + 1) / 2 if self.kind == "thumbs" else (self.score - 1) / 4

    @property
    def negative(self) -> bool:
        return self.kind != "task" and self.satisfaction < 0.5


class StepTrace(BaseModel):
    """What one step of the chain decided, and how long it took (None where it was not timed)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    ms: float | None = None
    detail: dict[str, Any]


class Trace(BaseModel):
    """One request as its tenant may look it up: each step it went through and what it decided,
    timings, attempts, tokens, cost; its prompt and answer only when the tenant keeps them
    (`traces.store_content`, PII masked); the feedback it got. No key, no raw user id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    tenant: str
    ts: float
    expires_at: float
    outcome: str
    error_code: str | None = None
    route: str | None = None
    model: str | None = None
    latency_ms: float
    first_token_ms: float | None = None  # an answer's first token (a whole answer's: its latency)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    steps: list[StepTrace]
    content: dict[str, Any] | None = None
    feedback: list[Feedback] = []
    replay_of: str | None = None  # `llm-gateway replay`: the request this one ran again
    offline: bool = False  # an eval run's or a replay's request, not a user's


class TraceStore(Protocol):
    """Traces, partitioned by tenant: found only under the tenant whose request it was, until it expires."""

    def put(self, trace: Trace) -> None:
        """Keep a request's trace (a repeated put keeps the first)."""
        ...

    def get(self, tenant: str, request_id: str, now: float) -> Trace | None: ...

    def add_feedback(self, tenant: str, request_id: str, feedback: Feedback, now: float) -> Trace | None:
        """Add feedback to the tenant's trace; the trace as it now is, or None when there is none."""
        ...


class RolloutGates(BaseModel):
    """When a rollout's stage advances, and when it rolls back (`experiments.rollouts`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_requests: int = Field(default=200, ge=1)  # candidate requests a stage needs before it may advance
    error_margin: float = Field(
        default=0.02, ge=0, le=1
    )  # how far the candidate's error rate may exceed the baseline's
    latency_ratio: float = Field(default=1.25, gt=0)  # the candidate's p95 at most this times the baseline's
    feedback_margin: float = Field(default=0.1, ge=0, le=1)  # satisfaction at most this below the baseline's
    min_feedback: int = Field(default=20, ge=1)  # feedbacks per arm before satisfaction counts
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    watch_alerts: bool = True  # the tenant's error-rate or latency alert firing rolls back
    eval_margin: float = Field(default=0.02, ge=0, le=1)  # how far below the baseline's its eval pass rate may be


class Rollout(BaseModel):
    """A route of a tenant moving from `baseline` to `candidate` through `stages` (shares in %)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rollout_id: str = Field(pattern=r"^ro_[A-Za-z0-9_-]{1,64}$")  # named in a response header: plain ASCII
    tenant: str
    route: str
    baseline: str
    candidate: str
    stages: list[float] = Field(min_length=1, max_length=100)
    stage: int = Field(default=0, ge=0)  # the index in `stages` now
    status: Literal["running", "completed", "rolled_back"] = "running"
    gates: RolloutGates = Field(default_factory=RolloutGates)
    started_at: float
    stage_started_at: float
    updated_at: float
    reason: str | None = None  # why it last changed

    @model_validator(mode="after")
    def _stages_hold(self) -> Rollout:
        """A stored rollout read back is checked as one being started: a damaged one is refused
        (and passed over by the stores), never a route sent to the candidate by a stray number."""
        if any(not 0.01 <= s <= 100 for s in self.stages) or self.stages != sorted(set(self.stages)):
            raise ValueError("stages are increasing shares from 0.01 to 100")
        if self.stage >= len(self.stages):
            raise ValueError("the stage is one of the stages")
        return self

    @property
    def share(self) -> float:
        """The share (%) of the route's users the candidate answers now."""
        if self.status == "rolled_back":
            return 0.0
        return 100.0 if self.status == "completed" else self.stages[self.stage]


class RolloutEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rollout_id: str
    at: float
    action: Literal["start", "advance", "complete", "rollback"]
    stage: int
    share: float
    actor: str  # `gates` (the evaluator), or who ran the command
    detail: dict[str, Any] = {}


class RolloutStore(Protocol):
    """Rollouts and every transition of theirs, kept for audit."""

    def active(self, tenant: str, route: str) -> Rollout | None:
        """The rollout the router applies to this route now (running or completed), if any."""
        ...

    def get(self, rollout_id: str) -> Rollout | None: ...

    def all(self, tenant: str | None = None) -> list[Rollout]: ...

    def save(self, rollout: Rollout, event: RolloutEvent, expected_updated_at: float | None = None) -> None:
        """Keep the rollout as it now is, and the transition that made it so, together; with
        `expected_updated_at`, only if it has not changed since (ValueError otherwise). A second
        running rollout of a route is a ValueError."""
        ...

    def events(self, rollout_id: str) -> list[RolloutEvent]: ...


class Variant(BaseModel):
    """One arm of an experiment: its model (None: the route's), generation parameters and system
    prompt over the request's, and its share of the route's users."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    model: str | None = None
    params: dict[str, float | int] = {}  # temperature, top_p, max_tokens, ...
    system_prompt: str | None = Field(default=None, max_length=20_000)
    weight: float = Field(default=1.0, gt=0)


class Experiment(BaseModel):
    """An A/B experiment on a tenant's route; the first variant is the control."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    experiment_id: str = Field(pattern=r"^ex_[A-Za-z0-9_-]{1,64}$")  # named in a response header: plain ASCII
    tenant: str
    route: str
    variants: list[Variant] = Field(min_length=2, max_length=10)
    metric: Literal["task_success", "satisfaction"] = "task_success"
    mde: float  # the planned absolute effect on the metric (its mSPRT's mixing scale)
    alpha: float = 0.05
    error_margin: float = 0.02  # guardrail: a variant failing this much more than the control stops it
    status: Literal["running", "stopped"] = "running"
    winner: str | None = None
    reason: str | None = None
    started_at: float
    stopped_at: float | None = None


class ExperimentStore(Protocol):
    def active(self, tenant: str, route: str) -> Experiment | None: ...

    def get(self, experiment_id: str) -> Experiment | None: ...

    def all(self, tenant: str | None = None) -> list[Experiment]: ...

    def save(self, experiment: Experiment) -> None: ...
