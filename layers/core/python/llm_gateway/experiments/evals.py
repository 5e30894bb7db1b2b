"""Eval suites through the gateway's chain, and the paired comparison of two runs.

`run_suite` sends each case as a chat completion through the whole chain (guards on, caches
bypassed, cost accounted as the tenant's), scores the answer (`scorers`), and `report` sums the run
up: pass rate, per tag, outcomes, cost, tokens, latency. `compare` pairs two runs case by case:
McNemar's exact test on the cases one passed and the other failed, and a paired bootstrap interval
of the difference in pass rate; "worse", "better" or "no evidence".
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from ..alerts import percentile
from ..errors import GatewayError, GuardrailBlocked
from .scorers import EvalCase, Judge, Score, score

if TYPE_CHECKING:
    from ..contracts import GatewayState, Usage
    from ..deps import Deps

SUITES = ("humaneval", "extraction")  # shipped with the package (`experiments/suites/`)
MAX_CASES = 100_000
MAX_SUITE_BYTES = 256 << 20
BOOTSTRAP_SAMPLES = 10_000


class SuiteError(ValueError):
    """A suite that cannot be read: the file, and the line, and why."""


def suite_path(name: str) -> Path:
    """A suite's file: a path as given, or the name of a shipped suite."""
    if name in SUITES:
        return Path(str(resources.files("llm_gateway.experiments") / "suites" / f"{name}.jsonl.gz"))
    return Path(name)


def load_suite(name: str) -> list[EvalCase]:
    path = suite_path(name)
    try:
        raw = _bounded(path)
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError, zlib.error) as exc:
        raise SuiteError(f"{path}: cannot be read ({exc})") from None
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = EvalCase.model_validate_json(line)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "the line"
            raise SuiteError(f"{path}:{number}: {where}: {problem['msg']}") from None
        if case.id in seen:
            raise SuiteError(f"{path}:{number}: id {case.id!r} is used twice")
        seen.add(case.id)
        cases.append(case)
        if len(cases) > MAX_CASES:
            raise SuiteError(f"{path}: more than {MAX_CASES} cases")
    if not cases:
        raise SuiteError(f"{path}: no case")
    return cases


def _bounded(path: Path) -> bytes:
    """The suite file's bytes (gunzipped for `.gz`), refused past `MAX_SUITE_BYTES`."""
    if path.suffix != ".gz":
        if path.stat().st_size > MAX_SUITE_BYTES:
            raise SuiteError(f"{path}: larger than {MAX_SUITE_BYTES >> 20} MiB")
        return path.read_bytes()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    raw = inflate.decompress(path.read_bytes(), MAX_SUITE_BYTES + 1)
    if len(raw) > MAX_SUITE_BYTES or inflate.unconsumed_tail:
        raise SuiteError(f"{path}: unpacks to more than {MAX_SUITE_BYTES >> 20} MiB")
    return raw


@dataclass
class CaseResult:
    id: str
    tags: list[str]
    passed: bool
    value: float
    detail: str
    outcome: str  # answered, refused (a guardrail), failed (an error)
    request_id: str
    model: str | None
    cost_usd: float
    judge_cost_usd: float
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    answer: str


class Gateway:
    """Chat completions through the chain, as one tenant, caches bypassed."""

    def __init__(self, deps: Deps, tenant: str) -> None:
        from ..runner import InProcessRunner

        policy = deps.config.tenants.get(tenant)
        if policy is None or not policy.api_keys:
            raise ValueError(f"tenant {tenant} is not in this configuration, or has no API key to run as")
        self.deps, self.key = deps, policy.api_keys[0].sha256
        self.runner = InProcessRunner(deps)

    def ask(self, body: dict[str, Any]) -> tuple[GatewayState, str | None, GatewayError | None]:
        """Run one request; its state, the answer's text (None when refused or failed), the error."""
        from ..contracts import CallerContext, ChatCompletionRequest, GatewayState
        from ..finish import final_response

        state = GatewayState(
            request_id=uuid.uuid4().hex,
            received_at=time.time(),
            request=ChatCompletionRequest.model_validate(body),
            caller=CallerContext(api_key_sha256=self.key, cache_control="no-cache, no-store", offline=True),
        )
        try:
            self.runner.run(state)
        except GatewayError as error:
            return state, None, error
        if state.guard is not None and state.guard.outcome == "blocked":
            return state, None, GuardrailBlocked(state.guard.reason or "refused by a guardrail")
        answer = final_response(state)
        return state, answer.choices[0].message.content or "" if answer.choices else "", None

    def judge(self, model: str) -> tuple[Judge, list[float]]:
        """A judge that asks `model` through the chain; and the list its calls' costs go to."""
        costs: list[float] = []

        def ask(prompt: str) -> str:
            state, text, error = self.ask(
                {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 8}
            )
            costs.append(state.invoke.response.usage.cost_usd if state.invoke is not None else 0.0)
            if error is not None:
                raise RuntimeError(f"the judge {model} failed: {error.message}")
            return text or ""

        return ask, costs


def run_suite(
    cases: Iterable[EvalCase],
    gateway: Gateway,
    model: str,
    judge_model: str | None = None,
    advance: Callable[[], None] = lambda: None,
) -> list[CaseResult]:
    """Each case through the chain on `model` (a route or a model of the tenant), scored."""
    judge, judge_costs = gateway.judge(judge_model) if judge_model else (None, [])
    results = []
    for case in cases:
        body = {**case.params, "model": model, "messages": [m.model_dump(exclude_none=True) for m in case.messages]}
        started = time.perf_counter()
        state, text, error = gateway.ask(body)
        latency_ms = (time.perf_counter() - started) * 1000
        spent_before = len(judge_costs)
        if text is None:
            outcome = "refused" if isinstance(error, GuardrailBlocked) else "failed"
            verdict = Score(False, 0.0, f"{outcome}: {error.message if error else ''}"[:300])
        else:
            outcome = "answered"
            try:
                verdict = score(case, text, judge)
            except RuntimeError as exc:  # the judge failed: this case is not scored as passed
                verdict = Score(False, 0.0, str(exc)[:300])
        usage = state.invoke.response.usage if state.invoke is not None else _spent_usage(error)
        spent = usage.model_dump() if usage else {}
        answered_by = state.invoke.response.model if state.invoke is not None else None
        result = case_result(case, verdict, outcome, state.request_id, answered_by, spent, text)
        result.judge_cost_usd, result.latency_ms = sum(judge_costs[spent_before:]), round(latency_ms, 3)
        results.append(result)
        advance()
    return results


def case_result(
    case: EvalCase,
    verdict: Score,
    outcome: str,
    request_id: str,
    model: str | None,
    usage: dict[str, Any],
    text: str | None,
) -> CaseResult:
    """A case's result from its verdict and its request's usage (`cost_usd`, `prompt_tokens`,
    `completion_tokens`); no judge cost or latency yet."""
    return CaseResult(
        id=case.id,
        tags=case.tags,
        passed=verdict.passed,
        value=round(verdict.value, 6),
        detail=verdict.detail,
        outcome=outcome,
        request_id=request_id,
        model=model,
        cost_usd=float(usage.get("cost_usd") or 0.0),
        judge_cost_usd=0.0,
        latency_ms=0.0,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        answer=(text or "")[:4000],
    )


def _spent_usage(error: GatewayError | None) -> Usage | None:
    """What a failed request had paid for (a format repair that failed, a choice that failed)."""
    from ..contracts import InvokeResult

    if error is None or not error.spent:
        return None
    return InvokeResult.model_validate(error.spent).response.usage


def report(results: list[CaseResult], **about: Any) -> dict[str, Any]:
    """The run summed up, with each case's result."""
    tags: dict[str, list[CaseResult]] = {}
    for result in results:
        for tag in result.tags or ["(untagged)"]:
            tags.setdefault(tag, []).append(result)
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    latencies = [r.latency_ms for r in results]
    passed = sum(r.passed for r in results)
    return {
        **about,
        "cases": len(results),
        "passed": passed,
        "pass_rate": passed / len(results) if results else 0.0,
        "by_tag": {
            tag: {
                "cases": len(group),
                "passed": sum(r.passed for r in group),
                "pass_rate": sum(r.passed for r in group) / len(group),
            }
            for tag, group in sorted(tags.items())
        },
        "outcomes": outcomes,
        "cost_usd": round(sum(r.cost_usd for r in results), 8),
        "judge_cost_usd": round(sum(r.judge_cost_usd for r in results), 8),
        "tokens": {"input": sum(r.prompt_tokens for r in results), "output": sum(r.completion_tokens for r in results)},
        "latency_ms": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95)} if latencies else {},
        "results": [asdict(r) for r in results],
    }


def render(found: dict[str, Any]) -> str:
    """A run's report as markdown."""
    lines = [
        f"# Eval: {found.get('suite')} on {found.get('target')}",
        "",
        f"**pass rate {found['pass_rate']:.1%}** ({found['passed']} of {found['cases']}); "
        f"outcomes {', '.join(f'{k} {v}' for k, v in sorted(found['outcomes'].items()))}; "
        f"cost {found['cost_usd']:.6g} USD (judge {found['judge_cost_usd']:.6g}); "
        f"tokens {found['tokens']['input']} in / {found['tokens']['output']} out; "
        + (
            f"latency p50 {found['latency_ms']['p50']:.0f} ms, p95 {found['latency_ms']['p95']:.0f} ms"
            if found["latency_ms"]
            else ""
        ),
        "",
        "| tag | cases | passed | pass rate |",
        "|---|---|---|---|",
        *(f"| {tag} | {t['cases']} | {t['passed']} | {t['pass_rate']:.1%} |" for tag, t in found["by_tag"].items()),
        "",
        "## Failed cases",
        "",
        *(f"- `{r['id']}`: {r['detail']}" for r in found["results"] if not r["passed"]),
        "",
    ]
    return "\n".join(lines)


def _passed(run: dict[str, Any], label: str) -> dict[str, bool]:
    """A run's case id -> passed, every entry checked (a report edited by hand is refused)."""
    found: dict[str, bool] = {}
    for entry in run["results"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str)
            or not isinstance(entry.get("passed"), bool)
        ):
            raise ValueError(f"run {label}: a result without a string id and a true or false passed")
        if entry["id"] in found:
            raise ValueError(f"run {label}: case {entry['id']!r} is in it twice")
        found[entry["id"]] = entry["passed"]
    return found


def compare(a: dict[str, Any], b: dict[str, Any], alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """B against A on the cases both ran: McNemar's exact test (two-sided) and a paired bootstrap
    interval of B's pass rate minus A's. "worse" or "better" when the test rejects at `alpha`."""
    from scipy.stats import binomtest

    passed_a, passed_b = _passed(a, "A"), _passed(b, "B")
    if passed_a.keys() != passed_b.keys():
        only_a, only_b = len(passed_a.keys() - passed_b.keys()), len(passed_b.keys() - passed_a.keys())
        raise ValueError(
            f"the runs are of different cases ({only_a} only in A, {only_b} only in B): run the same suite and --limit"
        )
    shared = sorted(passed_a)
    if not shared:
        raise ValueError("the runs have no case")
    pairs = [(passed_a[i], passed_b[i]) for i in shared]
    only_a = sum(x and not y for x, y in pairs)  # A passed, B failed
    only_b = sum(y and not x for x, y in pairs)
    discordant = only_a + only_b
    p_value = float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue) if discordant else 1.0
    difference = (only_b - only_a) / len(pairs)
    deltas = np.array([int(y) - int(x) for x, y in pairs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(BOOTSTRAP_SAMPLES, 2_000_000 // len(deltas)))  # resamples at a time: bounded memory
    boot: list[float] = []
    while len(boot) < BOOTSTRAP_SAMPLES:
        size = min(chunk, BOOTSTRAP_SAMPLES - len(boot))
        boot += deltas[rng.integers(0, len(deltas), size=(size, len(deltas)))].mean(axis=1).tolist()
    boot.sort()
    low, high = percentile(boot, alpha / 2), percentile(boot, 1 - alpha / 2)
    verdict = "no evidence" if p_value >= alpha else ("worse" if only_a > only_b else "better")
    return {
        "verdict": verdict,
        "cases": len(pairs),
        "pass_rate_a": sum(x for x, _ in pairs) / len(pairs),
        "pass_rate_b": sum(y for _, y in pairs) / len(pairs),
        "difference": difference,
        "interval": [low, high],
        "confidence": 1 - alpha,
        "a_passed_b_failed": only_a,
        "b_passed_a_failed": only_b,
        "p_value": p_value,
        "test": "McNemar exact (two-sided); paired bootstrap interval",
    }
