"""An eval suite run through the batch path (`llm-gateway eval run ... --batch-bucket`): the cases
become the lines of one batch file under `batches/in/<tenant>/evals/` (the batch runner answers
those with caches bypassed and on no rollout or experiment arm, as an online eval), and the job's
result and error files become the run's results, scored as an online run's are.

A batch keeps no per-request latency: the report's latency is left empty. Cases a judge scores
need a model call per answer after the batch: such suites run online (`eval run` without a bucket).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from ..batch.format import CHAT_URL
from ..batch.runner import EVALS_FOLDER, IN_PREFIX
from .evals import CaseResult, case_result
from .scorers import EvalCase, Score, score

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def batch_key(tenant: str, suite: str, target: str, now: float) -> str:
    """Where the run's batch file goes: the tenant's evals folder, named after the suite, the target and the time."""
    stem = _NAME.sub("-", f"{suite.rsplit('/', 1)[-1].removesuffix('.gz').removesuffix('.jsonl')}-{target}")[:120]
    moment = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{IN_PREFIX}{tenant}/{EVALS_FOLDER}{stem}-{moment}.jsonl"


def batch_file(cases: list[EvalCase], target: str) -> bytes:
    """The batch file of a run: one chat completion request per case, its id the case's."""
    if any(c.scorer == "judge" for c in cases):
        raise ValueError("cases a judge scores need the judge after each answer: run this suite online (no bucket)")
    lines = []
    for case in cases:
        body = {**case.params, "model": target, "messages": [m.model_dump(exclude_none=True) for m in case.messages]}
        lines.append(json.dumps({"custom_id": case.id, "method": "POST", "url": CHAT_URL, "body": body}))
    return ("\n".join(lines) + "\n").encode()


def _records(jsonl: bytes) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for raw in jsonl.decode("utf-8").splitlines():
        if raw.strip():
            record = json.loads(raw)
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                found[record["custom_id"]] = record
    return found


def batch_results(cases: list[EvalCase], results: bytes, errors: bytes) -> list[CaseResult]:
    """Each case's result from the job's output: its answer scored, or why it has none."""
    answered, failed = _records(results), _records(errors)
    found = []
    for case in cases:
        record = answered.get(case.id) or failed.get(case.id)
        response = (record or {}).get("response") or {}
        body = response.get("body") or {}
        usage = body.get("usage") or {}
        text = None
        if response.get("status_code") == 200 and body.get("choices"):
            text = (body["choices"][0].get("message") or {}).get("content") or ""
        if text is not None:
            outcome, verdict = "answered", score(case, text)
        else:
            error = (record or {}).get("error") or {}
            refused = (body.get("error") or {}).get("type") == "guardrail"
            outcome = "refused" if refused else "failed"
            why = error.get("message") or ("no result in the batch's output" if record is None else "")
            verdict = Score(False, 0.0, f"{outcome}: {why}"[:300])
        model = body.get("model")
        found.append(case_result(case, verdict, outcome, str(response.get("request_id") or ""), model, usage, text))
    return found
