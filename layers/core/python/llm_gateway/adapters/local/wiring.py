"""The dependencies on the local adapters: every store on one SQLite file. `llm-gateway serve`, its
batch command and a Lambda with GATEWAY_STORE=sqlite (tests, a single-instance deployment) use it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ...config import GatewayConfig
from ...deps import Deps
from ...observability import InMemoryMetrics, MetricsSink
from ...pipeline import INVOKE_POLICY, RetryPolicy


def local_deps(
    config: GatewayConfig,
    stack: contextlib.ExitStack,
    *,
    metrics: MetricsSink | None = None,
    invoke_policy: RetryPolicy = INVOKE_POLICY,
    pseudonym_key_beside_store: bool = True,
) -> Deps:
    """Every store on the configuration's SQLite file (closed when `stack` unwinds), in-memory
    rate limits, the standard providers; metrics in memory unless `metrics` is given.

    `pseudonym_key_beside_store`: key the pseudonyms with a key file next to the store (unless
    LLM_GATEWAY_PSEUDONYM_KEY is set); a Lambda sets its key from Secrets Manager instead."""
    from ...experiments.shadow import ShadowRunner
    from ...identity import KEY_ENV, key_file, set_pseudonym_key
    from ...providers.base import default_registry
    from .allowlist import SqliteGuardAllowList
    from .batch import SqliteBatchJobs
    from .budget import SqliteBudgetLedger
    from .conversations import SqliteConversationStore
    from .experiments import SqliteExperimentStore
    from .memory import MemoryRateLimiter
    from .review import SqliteReviewQueue
    from .rollouts import SqliteRolloutStore
    from .semantic import LocalSemanticIndex
    from .sqlite import SqliteStore
    from .traces import SqliteTraceStore

    if pseudonym_key_beside_store and not os.environ.get(KEY_ENV) and config.storage_path != ":memory:":
        # Pseudonyms keyed per deployment: the key lives beside the store it protects.
        set_pseudonym_key(key_file(Path(config.storage_path).parent / "pseudonym.key"))
    path = config.storage_path
    store = stack.enter_context(contextlib.closing(SqliteStore(path)))
    semantic = stack.enter_context(contextlib.closing(LocalSemanticIndex(path)))
    review_queue = stack.enter_context(contextlib.closing(SqliteReviewQueue(path)))
    allowlist = stack.enter_context(contextlib.closing(SqliteGuardAllowList(path)))
    budgets = stack.enter_context(contextlib.closing(SqliteBudgetLedger(path)))
    batch_jobs = stack.enter_context(contextlib.closing(SqliteBatchJobs(path)))
    conversations = stack.enter_context(contextlib.closing(SqliteConversationStore(path)))
    traces = stack.enter_context(contextlib.closing(SqliteTraceStore(path)))
    rollouts = stack.enter_context(contextlib.closing(SqliteRolloutStore(path)))
    shadows = stack.enter_context(contextlib.closing(ShadowRunner(path)))
    experiments = stack.enter_context(contextlib.closing(SqliteExperimentStore(path)))
    return Deps(
        experiments=experiments,
        traces=traces,
        rollouts=rollouts,
        shadows=shadows,
        batch_jobs=batch_jobs,
        conversations=conversations,
        config=config,
        cache=store,
        semantic=semantic,
        review=review_queue,
        allowlist=allowlist,
        budgets=budgets,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
        metrics=metrics if metrics is not None else InMemoryMetrics(),
        invoke_policy=invoke_policy,
    )
