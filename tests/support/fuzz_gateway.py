"""A gateway to fuzz: the real ASGI app on uvicorn (loopback), the echo model as its upstream, and
tenant features on (PII masking, blocklists, injection and harmful-content guards, compression,
rate limits, budgets, the semantic cache, batch jobs), so fuzzed bodies walk the real guard code.

    with fuzz_gateway(tmp_path) as gateway:
        httpx.get(gateway.url + "/healthz")

`gateway.errors` holds what the server logged at ERROR (tracebacks included) while it ran;
`openai_error_problem(...)` says what is wrong with an error answer, or None for the OpenAI shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from llm_gateway.adapters.local.batch import SqliteBatchJobs
from llm_gateway.adapters.local.budget import SqliteBudgetLedger
from llm_gateway.adapters.local.conversations import SqliteConversationStore
from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.config import hash_key, parse_config
from llm_gateway.deps import Deps
from llm_gateway.http.app import create_app
from llm_gateway.http.protocol import http_protocol
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.ports import BatchJob
from llm_gateway.runner import InProcessRunner
from tests.conftest import make_deps
from tests.support.servers import serve

KEY = "sk-fuzz-tenant"  # the fuzzed tenant, every feature on
OTHER_KEY = "sk-fuzz-other"  # another tenant: 1 request a minute
ADMIN_KEY = "sk-fuzz-admin"
WRONG_KEY = "sk-fuzz-nobody"
BATCH_ID = "batch_fuzz_1"  # the fuzzed tenant's batch job
OTHER_BATCH_ID = "batch_other_1"  # the other tenant's: never visible to the fuzzed tenant
MAX_BODY_BYTES = 1_048_576

CONFIG = f"""
limits: {{max_body_bytes: {MAX_BODY_BYTES}, max_messages: 64, max_prompt_chars: 200000}}
admin_api_keys: [{{id: ops, sha256: {hash_key(ADMIN_KEY)}}}]
models:
  echo:
    provider: echo
    price: {{input_per_mtok: 1.0, cached_input_per_mtok: 0.5, output_per_mtok: 2.0}}
    max_output_tokens: 256
  echo-b:
    provider: echo
    price: {{input_per_mtok: 3.0, output_per_mtok: 4.0}}
tenants:
  fuzz:
    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]
    routes:
      default: {{model: echo, fallbacks: [echo-b], max_tokens: 128}}
      brief: {{model: echo, brief_simple: true}}
    allowed_models: [echo-b]
    rate_limit: {{requests_per_minute: 1000000, burst: 100000}}
    user_rate_limit: {{requests_per_minute: 1000000, burst: 100000}}
    ip_rate_limit: {{requests_per_minute: 1000000, burst: 100000}}
    input_blocklist: {{keywords: [codename], patterns: ['secret-[0-9]+']}}
    output_blocklist: {{keywords: [forbidden], patterns: ['\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b']}}
    semantic_cache: {{enabled: true, target_precision: 0.9, top_k: 1}}
    compression: {{enabled: true}}
    budgets: [{{scope: tenant, period: day, usd: 1000}}, {{scope: user, period: month, tokens: 1000000000}}]
    guards:
      pii: {{enabled: true, default: mask, restore: [EMAIL], entities: {{US_SSN: reject}}}}
      injection: {{enabled: true}}
      harmful: {{enabled: true}}
      grounded: {{enabled: true, action: flag}}
  other:
    api_keys: [{{id: k1, sha256: {hash_key(OTHER_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    rate_limit: {{requests_per_minute: 1, burst: 1}}
"""

ERROR_FIELDS = {"message": (str,), "type": (str,), "param": (str, type(None)), "code": (str, type(None))}


def openai_error_problem(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """What keeps an error answer from being an OpenAI error (None: it is one): content type
    application/json and exactly `{"error": {"message": str, "type": str, "param": str|null,
    "code": str|null}}`."""
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/json":
        return f"{status}: content-type {content_type!r}, not application/json"
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{status}: the body is not JSON: {body[:200]!r}"
    error = data.get("error") if isinstance(data, dict) and set(data) == {"error"} else None
    if not isinstance(error, dict) or set(error) != set(ERROR_FIELDS):
        return f"{status}: not an OpenAI error body: {body[:300]!r}"
    wrong = [name for name, types in ERROR_FIELDS.items() if not isinstance(error[name], types)]
    if wrong or not error["message"]:
        return f"{status}: error fields of the wrong type {wrong}: {body[:300]!r}"
    return None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FuzzGateway:
    url: str
    deps: Deps
    _log: _Collect = field(repr=False)

    @property
    def errors(self) -> list[str]:
        """What the server logged at ERROR so far, each with its traceback."""
        formatter = logging.Formatter("%(name)s: %(message)s")
        return [formatter.format(record) for record in self._log.records]


def _batch_job(job_id: str, tenant: str) -> BatchJob:
    now = time.time()
    return BatchJob(
        job_id=job_id,
        tenant=tenant,
        source=f"batches/in/{tenant}/fuzz.jsonl",
        version="v1",
        created_at=now,
        updated_at=now,
        requests=0,
        invalid=0,
    )


@contextmanager
def fuzz_gateway(folder: Path) -> Iterator[FuzzGateway]:
    """The gateway on a free loopback port, served as `llm-gateway serve` serves it."""
    db = folder / "gateway.db"
    deps = make_deps(parse_config(CONFIG), db=db, metrics=InMemoryMetrics(), budgets=SqliteBudgetLedger(db))
    deps.semantic = LocalSemanticIndex(db)
    deps.conversations = SqliteConversationStore(db)
    deps.traces = SqliteTraceStore(db)
    jobs = SqliteBatchJobs(folder / "batches.db")
    jobs.create(_batch_job(BATCH_ID, "fuzz"), [])
    jobs.create(_batch_job(OTHER_BATCH_ID, "other"), [])
    deps.batch_jobs = jobs
    collect = _Collect()
    watched = [logging.getLogger(name) for name in ("llm_gateway", "uvicorn.error", "uvicorn.asgi")]
    for logger in watched:
        logger.addHandler(collect)
    # One BLAS thread: on a busy 2-core machine OpenBLAS's thread hand-offs make the semantic
    # verifier's small matrix products ~20 ms instead of ~1 ms, which would bound the fuzz's rate.
    try:
        with (
            threadpool_limits(limits=1, user_api="blas"),
            serve(create_app(InProcessRunner(deps)), http=http_protocol(), lifespan="off") as url,
        ):
            yield FuzzGateway(url, deps, collect)
    finally:
        for logger in watched:
            logger.removeHandler(collect)
