"""Eval suites: what one case is (`EvalCase`, a line of a suite's JSONL) and how its answer is
scored. Each scorer returns a `Score`: passed or not, a value in [0, 1], and why.

- `exact`: the answer (trimmed) is `expected` (`ignore_case` to fold case);
- `contains`: `expected` is in the answer (case folded unless `ignore_case` is false);
- `regex`: `pattern` (RE2: linear time, whatever the suite holds) matches somewhere;
- `json_schema`: the answer (or its fenced JSON block) is JSON valid against `schema`, and equal to
  `expected` where one is given (an object: the share of its fields that match is the value);
- `numeric`: the answer's last number is within `tolerance` of `expected` (absolute; with
  `relative`, a share of `expected`);
- `similarity`: the cosine of the answer's and `reference`'s embeddings (the semantic cache's
  model) is at least `threshold`;
- `judge`: a judge model, given `rubric`, says PASS (single), or finds the answer at least as good
  as `reference` (pairwise);
- `execution`: the answer's Python code passes `tests` (which define `check(candidate)`, called
  with `entry_point`) in a separate Python with limits.

Schemas and patterns come from the suite, held as the gateway holds a caller's: RE2 only, bounded
validation, no reference that fetches anything.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..contracts import ChatMessage

ScorerName = Literal["exact", "contains", "regex", "json_schema", "numeric", "similarity", "judge", "execution"]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FENCED = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)```", re.DOTALL)
EXECUTION_TIMEOUT_S = 10.0
_OUTPUT_READ = 1 << 20  # what is read of the child's output (its files cannot grow past its limit anyway)
# the program's first lines: CPU seconds, memory, file size and core dumps limited before the answer runs
# The child's bootstrap: CPU seconds, memory, file size (its output goes to files) and core dumps
# limited, then the case file run as `__main__` (compiled on its own: its `from __future__` lines
# stay first), then the sentinel only a finished `check` reaches (an early `os._exit(0)` is no pass).
_BOOTSTRAP = """import resource as _r, runpy as _p, sys as _s
_r.setrlimit(_r.RLIMIT_CPU, ({cpu}, {cpu}))
_r.setrlimit(_r.RLIMIT_AS, ({memory}, {memory}))
_r.setrlimit(_r.RLIMIT_FSIZE, ({output}, {output}))
_r.setrlimit(_r.RLIMIT_CORE, (0, 0))
_p.run_path("case.py", run_name="__main__")
_s.stdout.write("\\n{sentinel}\\n")
"""


class EvalCase(BaseModel):
    """One line of a suite: `{"id", "messages", "scorer", ...}` with the scorer's own fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    scorer: ScorerName
    expected: Any = None
    ignore_case: bool | None = None
    pattern: str | None = Field(default=None, max_length=10_000)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    tolerance: float = Field(default=0.0, ge=0)
    relative: bool = False
    reference: str | None = None
    threshold: float = Field(default=0.8, ge=-1, le=1)
    rubric: str | None = Field(default=None, max_length=20_000)
    tests: str | None = None
    entry_point: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt: str | None = None  # execution: code the answer completes (put before it when it is a body alone)
    tags: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)  # temperature, max_tokens, response_format, ...

    @model_validator(mode="after")
    def _fields_of_its_scorer(self) -> EvalCase:
        needed = {
            "exact": ("expected",),
            "contains": ("expected",),
            "regex": ("pattern",),
            "json_schema": ("json_schema",),
            "numeric": ("expected",),
            "similarity": ("reference",),
            "judge": ("rubric",),
            "execution": ("tests", "entry_point"),
        }[self.scorer]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"scorer {self.scorer} needs {', '.join('schema' if m == 'json_schema' else m for m in missing)}"
            )
        if self.scorer == "numeric" and (
            isinstance(self.expected, bool)
            or not isinstance(self.expected, int | float)
            or not math.isfinite(self.expected)
        ):
            raise ValueError("scorer numeric needs a finite number as expected")
        refused = sorted(set(self.params) & {"model", "messages", "stream", "n", "user"})
        if refused:
            raise ValueError(f"params: {', '.join(refused)} are the suite runner's, not a case's")
        from ..contracts import ChatCompletionRequest

        ChatCompletionRequest.model_validate(
            {**self.params, "model": "-", "messages": [m.model_dump() for m in self.messages]}
        )
        if self.scorer == "regex":
            from ..schema_safety import PatternRefused, compile_pattern

            try:
                compile_pattern(str(self.pattern))
            except PatternRefused as exc:
                raise ValueError(f"pattern: {exc}") from None
        if self.json_schema is not None:
            from ..schema_safety import schema_refusal

            problem = schema_refusal(self.json_schema)
            if problem is not None:
                raise ValueError(f"schema: {problem}")
        return self


@dataclass(frozen=True)
class Score:
    passed: bool
    value: float  # in [0, 1]
    detail: str


def fenced(text: str, languages: tuple[str, ...]) -> str | None:
    """The first fenced block in one of `languages` (or unlabelled), else None."""
    for language, body in _FENCED.findall(text):
        if not language or language.lower() in languages:
            return str(body)
    return None


def _exact(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    fold = case.ignore_case is True
    got, want = answer.strip(), str(case.expected).strip()
    passed = got.casefold() == want.casefold() if fold else got == want
    return Score(passed, float(passed), "equal" if passed else "not equal")


def _contains(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    fold = case.ignore_case is not False
    want = str(case.expected)
    passed = want.casefold() in answer.casefold() if fold else want in answer
    return Score(passed, float(passed), "found" if passed else "not found")


def _regex(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    from ..schema_safety import compile_pattern

    passed = compile_pattern(str(case.pattern)).search(answer) is not None
    return Score(passed, float(passed), "matched" if passed else "no match")


def _json_schema(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    from ..schema_validator import CheckAborted, bounded_errors

    value = _json_value(fenced(answer, ("json",)) or answer)
    if isinstance(value, Score):
        return value
    try:
        errors = bounded_errors(case.json_schema or {}, value)
    except CheckAborted as exc:
        return Score(False, 0.0, f"the check stopped: {exc}")
    if errors:
        return Score(False, 0.0, f"against the schema: {errors[0].message[:200]}")
    if case.expected is None or value == case.expected:
        return Score(True, 1.0, "valid" + (" and as expected" if case.expected is not None else ""))
    if isinstance(case.expected, dict) and isinstance(value, dict):
        wrong = sorted(k for k in case.expected if value.get(k) != case.expected[k])
        share = 1 - len(wrong) / max(len(case.expected), 1)
        return Score(False, share, f"fields differ: {', '.join(wrong)[:200]}")
    return Score(False, 0.0, "valid, but not the expected value")


def _json_value(text: str) -> Any:
    """The JSON `text` holds, or the `Score` of an answer that holds none (or too deep a one)."""
    from ..schema_safety import json_too_deep

    if json_too_deep(text):
        return Score(False, 0.0, "the JSON nests too deeply")
    try:
        return json.loads(text)
    except ValueError:
        return Score(False, 0.0, "not JSON")


def _numeric(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    found = _NUMBER.findall(answer)
    if not found:
        return Score(False, 0.0, "no number")
    try:
        got = float(found[-1].replace(",", ""))
    except ValueError:
        return Score(False, 0.0, "no number")
    want = float(case.expected)
    allowed = case.tolerance * abs(want) if case.relative else case.tolerance
    passed = math.isclose(got, want, abs_tol=allowed) if allowed else got == want
    return Score(passed, float(passed), f"{got:g} against {want:g}")


def _similarity(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    from ..semantic.embeddings import default_embedder

    vectors = default_embedder().embed([answer, str(case.reference)])
    cosine = float(vectors[0] @ vectors[1])
    return Score(cosine >= case.threshold, max(0.0, cosine), f"cosine {cosine:.3f} (threshold {case.threshold:g})")


def _judge(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    if judge is None:
        raise ValueError(f"case {case.id} is scored by a judge: name one (--judge MODEL)")
    question = "\n".join(str(m.content or "") for m in case.messages if m.role == "user")
    if case.reference is None:
        prompt = (
            "You grade an assistant's answer against a rubric. Reply with one word: PASS or FAIL.\n\n"
            f"Rubric:\n{case.rubric}\n\nQuestion:\n{question}\n\nAnswer:\n{answer}"
        )
    else:  # pairwise: the answer against a reference answer, in the order that does not favour it
        prompt = (
            "You compare two answers to a question against a rubric. Reply with one word: PASS if answer B "
            "is at least as good as answer A, FAIL if it is worse.\n\n"
            f"Rubric:\n{case.rubric}\n\nQuestion:\n{question}\n\nAnswer A:\n{case.reference}\n\nAnswer B:\n{answer}"
        )
    verdict = judge(prompt).strip().upper()
    passed = verdict.startswith("PASS")
    if not passed and not verdict.startswith("FAIL"):
        return Score(False, 0.0, f"the judge said neither PASS nor FAIL: {verdict[:60]!r}")
    return Score(passed, float(passed), "judge: PASS" if passed else "judge: FAIL")


def _execution(case: EvalCase, answer: str, judge: Judge | None) -> Score:
    """The answer's code (its fenced Python block, else the whole answer; after `prompt` when it
    lacks the function's own `def`, else after the prompt's imports) and the case's tests, run by
    a separate Python in an empty folder with no environment, limits on CPU, memory and output,
    and a timeout; its process group is ended afterwards. The tests define `check(candidate)`,
    called with the function named `entry_point`; it passes when `check` returns.

    Limits, not a sandbox: the code runs as this user and can read what it can. Run suites scored
    by execution where the process holds nothing the model's code may not see. What failed is
    reported by its exception's name only (a message could carry what the code found)."""
    code = fenced(answer, ("python", "py", "python3")) or answer
    if case.prompt:
        if not re.search(rf"^\s*def\s+{case.entry_point}\s*\(", code, re.MULTILINE):
            code = case.prompt + code  # the body alone: it completes the prompt
        else:  # the whole function: with the prompt's imports, which an answer often leaves out
            imports = [line for line in case.prompt.splitlines() if re.match(r"(import|from)\s+\w", line)]
            code = "\n".join([*imports, code])
    sentinel = secrets.token_hex(16)
    bootstrap = _BOOTSTRAP.format(cpu=int(EXECUTION_TIMEOUT_S), memory=1 << 30, output=1 << 20, sentinel=sentinel)
    with tempfile.TemporaryDirectory(prefix="llm-gateway-eval-") as folder:
        (Path(folder) / "case.py").write_text(
            f"{code}\n\n{case.tests}\n\ncheck({case.entry_point})\n", encoding="utf-8"
        )
        with (Path(folder) / "out").open("w+b") as out, (Path(folder) / "err").open("w+b") as err:
            child = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", bootstrap],
                cwd=folder,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: whatever it starts ends with it
            )
            try:
                child.wait(timeout=EXECUTION_TIMEOUT_S)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            out.seek(0)
            finished = sentinel.encode() in out.read(_OUTPUT_READ)
            err.seek(0)
            errors = err.read(_OUTPUT_READ).decode("utf-8", "replace").strip().splitlines()
    if timed_out:
        return Score(False, 0.0, f"timed out after {EXECUTION_TIMEOUT_S:g} s")
    if finished and child.returncode == 0:
        return Score(True, 1.0, "tests passed")
    raised = re.match(r"([A-Za-z_][\w.]*)(:|$)", errors[-1]) if errors else None
    return Score(False, 0.0, f"tests failed: {raised.group(1) if raised else 'the tests did not finish'}")


Judge = Callable[[str], str]
SCORERS: dict[str, Callable[[EvalCase, str, Judge | None], Score]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json_schema": _json_schema,
    "numeric": _numeric,
    "similarity": _similarity,
    "judge": _judge,
    "execution": _execution,
}


def score(case: EvalCase, answer: str, judge: Judge | None = None) -> Score:
    return SCORERS[case.scorer](case, answer, judge)
