"""An eval suite run through the batch path (`llm-gateway eval run ... --batch-bucket`): the cases
become the lines of one batch file under `batches/in/<tenant>/evals/` (the batch runner answers
those with caches bypassed and on no rollout or experiment arm, as an online eval), and the job's
result and error files become the run's results, scored as an online run's are.

A batch keeps no per-request latency: the report's latency is left empty. Cases a judge scores
need a model call per answer after the batch: such suites run online (`eval run` without a bucket).
"""

from __future__ import annotations

import json
import math
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
    """A batch output file's records by custom id (the first for an id); ValueError for a file
    that is not one."""
    found: dict[str, dict[str, Any]] = {}
    try:
        lines = jsonl.decode("utf-8").splitlines()
        for raw in lines:
            if raw.strip():
                record = json.loads(raw)
                if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                    found.setdefault(record["custom_id"], record)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the batch's output is not a batch output file ({exc})") from None
    return found


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def batch_results(cases: list[EvalCase], results: bytes, errors: bytes) -> list[CaseResult]:
    """Each case's result from the job's output: its answer scored, or why it has none."""
    answered, failed = _records(results), _records(errors)
    found = []
    for case in cases:
        record = answered.get(case.id) or failed.get(case.id)
        response = _mapping(_mapping(record).get("response"))
        body = _mapping(response.get("body"))
        raw_usage = _mapping(body.get("usage"))
        usage = {k: _number(raw_usage.get(k)) for k in ("cost_usd", "prompt_tokens", "completion_tokens")}
        choices = body.get("choices")
        text = None
        if response.get("status_code") == 200 and isinstance(choices, list) and choices:
            content = _mapping(_mapping(choices[0]).get("message")).get("content")
            text = content if isinstance(content, str) else ""
        if text is not None:
            outcome, verdict = "answered", score(case, text)
        else:
            refused = _mapping(body.get("error")).get("type") == "guardrail"
            outcome = "refused" if refused else "failed"
            why = _mapping(_mapping(record).get("error")).get("message")
            why = str(why) if why else ("no result in the batch's output" if record is None else "")
            verdict = Score(False, 0.0, f"{outcome}: {why}"[:300])
        model = body.get("model") if isinstance(body.get("model"), str) else None
        request_id = str(response.get("request_id") or "")
        found.append(case_result(case, verdict, outcome, request_id, model, usage, text))
    return found
