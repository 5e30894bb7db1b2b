"""The student against the teacher (`llm-gateway distill eval`): the collection's test split — the
newest traffic, never trained on — as an eval suite, each case scored against the teacher's
stored answer, run through the gateway's chain on the teacher (the route, or a model), on the
student (its weights served by the local endpoint under the name it will be registered as) and,
optionally, on a baseline (the untuned model). The summary: the quality ratio (the student's pass
rate over the teacher's, who answers the same prompts again now), the cost ratio at the
configured prices, and both latencies. Each run's own report is an `eval run` report, so
`eval compare` and `rollout start --eval` read them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from ..config import LOCAL_ENDPOINT, GatewayConfig, ModelConfig
from ..experiments.scorers import EvalCase
from .train import read_split

Scoring = Literal["auto", "exact", "json", "similarity"]
SIMILARITY_THRESHOLD = 0.9
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 64, 2048


def suite_name(data: Path) -> str:
    """The suite the runs name (the eval gate pairs runs of one suite)."""
    return f"distill:{data.resolve()}/test.jsonl"


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) and found else None


def test_cases(data: Path, scoring: Scoring = "auto") -> list[EvalCase]:
    """The collection's test split (`data/test.jsonl`) as eval cases (`cases_of`). ValueError
    naming the line when the split is not one of conversations (`read_split`)."""
    return cases_of(read_split(data / "test.jsonl"), scoring)


def cases_of(conversations: list[list[dict[str, str]]], scoring: Scoring = "auto") -> list[EvalCase]:
    """Conversations ending with the teacher's answer as eval cases: the prompt, and the answer as
    what is expected — the same JSON object (`json`: every field equal), the same text (`exact`),
    or an answer whose embedding is within `SIMILARITY_THRESHOLD` of it (`similarity`); `auto`
    takes `json` for an answer that is a JSON object and `similarity` otherwise. Greedy, with as
    many tokens as the teacher's answer has characters (several times its tokens; 64 to 2,048)."""
    cases = []
    for number, conversation in enumerate(conversations, 1):
        prompt, answer = conversation[:-1], conversation[-1]["content"]
        params = {"temperature": 0, "max_tokens": min(MAX_MAX_TOKENS, max(MIN_MAX_TOKENS, len(answer)))}
        about: dict[str, Any] = {"id": f"test-{number}", "messages": prompt, "params": params, "tags": ["test"]}
        kind = scoring
        if kind == "auto":
            kind = "json" if _json_object(answer) is not None else "similarity"
        if kind == "json":
            expected = _json_object(answer)
            if expected is None:
                raise ValueError(f"test.jsonl line {number}: the teacher's answer is not a JSON object")
            case = {**about, "scorer": "json_schema", "schema": {"type": "object"}, "expected": expected}
            cases.append(EvalCase.model_validate(case))
        elif kind == "exact":
            cases.append(EvalCase(**about, scorer="exact", expected=answer.strip()))
        else:
            cases.append(EvalCase(**about, scorer="similarity", reference=answer, threshold=SIMILARITY_THRESHOLD))
    if not cases:
        raise ValueError("test.jsonl holds no example to evaluate on")
    return cases


def weights_digest(weights: Path) -> str:
    """sha256 over the checkpoint's files (names and bytes), so a registration can tell the
    weights it registers are the ones evaluated."""
    digest = hashlib.sha256()
    files = [weights] if weights.is_file() else sorted(p for p in weights.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(weights) if weights.is_dir() else path.name).encode() + b"\0")
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def like_model(config: GatewayConfig, name: str | None) -> ModelConfig:
    """What a student inherits (price, instance price and throughput, timeouts, context): `name`'s
    settings, or the packaged local model's; a bare local model without either."""
    if name is not None:
        if name not in config.models:
            raise ValueError(f"--like {name}: no such model in the configuration")
        return config.models[name]
    for model in config.models.values():
        if model.provider == "sagemaker" and model.endpoint == LOCAL_ENDPOINT and model.weights is None:
            return model
    return ModelConfig(provider="sagemaker", endpoint=LOCAL_ENDPOINT)


def student_model(like: ModelConfig, weights: Path) -> ModelConfig:
    """The student as a model of the configuration: served by the local endpoint from `weights`,
    a candidate, never a teacher for later collections."""
    return like.model_copy(
        update={
            "provider": "sagemaker",
            "endpoint": LOCAL_ENDPOINT,
            "weights": str(weights.resolve()),
            "provider_model": None,
            "lifecycle": "candidate",
            "allows_training": False,
            "retires_on": None,
        }
    )


def with_student(config: GatewayConfig, tenant: str, name: str, model: ModelConfig) -> GatewayConfig:
    """`config` with the student added and allowed to `tenant` (for the eval's requests only)."""
    if name in config.models:
        raise ValueError(f"--name {name}: the configuration has a model of that name already")
    policy = config.tenants[tenant]
    allowed = policy.model_copy(update={"allowed_models": [*policy.allowed_models, name]})
    return config.model_copy(
        update={"models": {**config.models, name: model}, "tenants": {**config.tenants, tenant: allowed}}
    )


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else round(numerator / denominator, 4)


def summary(runs: dict[str, dict[str, Any]], bar: float, **about: Any) -> dict[str, Any]:
    """The comparison: each run's pass rate, cost and latency; the student's ratios to the
    teacher; whether it meets `bar` (the quality ratio the tenant asks)."""
    student, teacher = runs["student"], runs["teacher"]
    quality = ratio(student["pass_rate"], teacher["pass_rate"])
    teacher_p50 = (teacher.get("latency_ms") or {}).get("p50") or 0.0
    student_p50 = (student.get("latency_ms") or {}).get("p50") or 0.0
    return {
        **about,
        "cases": teacher["cases"],
        "runs": {
            name: {
                "target": run["target"],
                "cases": run["cases"],
                "pass_rate": run["pass_rate"],
                "passed": run["passed"],
                "cost_usd": run["cost_usd"],
                "latency_ms": run.get("latency_ms") or {},
                "outcomes": run["outcomes"],
            }
            for name, run in runs.items()
        },
        "quality_ratio": quality,
        "cost_ratio": ratio(student["cost_usd"], teacher["cost_usd"]),
        "latency_ratio": ratio(student_p50, teacher_p50),
        "bar": bar,
        "meets_bar": quality is not None and quality >= bar,
    }


def render(found: dict[str, Any]) -> str:
    """The comparison as markdown."""
    lines = [
        f"# Distillation eval: {found['name']} against {found['runs']['teacher']['target']}",
        "",
        f"{found['cases']} held-out cases ({found['suite']}).",
        "",
        "| run | model | pass rate | cost (USD) | p50 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, run in found["runs"].items():
        p50 = run["latency_ms"].get("p50")
        lines.append(
            f"| {name} | {run['target']} | {run['pass_rate']:.1%} ({run['passed']}/{run['cases']}) | "
            f"{run['cost_usd']:.6g} | "
            f"{'-' if p50 is None else f'{p50:.0f}'} |"
        )
    quality = found["quality_ratio"]
    lines += [
        "",
        f"Quality ratio {'-' if quality is None else f'{quality:.3f}'} (bar {found['bar']:.2f}: "
        f"{'met' if found['meets_bar'] else 'not met'}); cost ratio {found['cost_ratio']}; "
        f"latency ratio {found['latency_ratio']}.",
    ]
    return "\n".join(lines) + "\n"
