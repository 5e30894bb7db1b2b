"""The everyday evaluation set's shape (tests/data/everyday_{tuning,test}.jsonl, described in
tests/data/everyday_README.md): fields and labels, unique ids, the minimum counts, languages,
every category in both parts, and no request text shared between the tuning and the test part
(the test part is never tuned on, so none of it may hide in the tuning part)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parents[1] / "data"
PARTS = {"tuning": "ev-u", "test": "ev-t"}
LABELS = {"benign", "personal_medical", "personal_legal"}
BENIGN_CATEGORIES = {
    "identifiers",
    "code",
    "safe_violent_words",
    "safety_history",
    "children_school",
    "roleplay_format",
    "multilingual",
    "fiction_conflict",
    "pasted_documents",
    "everyday",
    "general_health",
    "general_law",
}
# part -> (benign, personal advice) at least
MINIMUMS = {"tuning": (260, 40), "test": (420, 60)}
ROLES = {"system", "user", "assistant"}


def _rows(part: str) -> list[dict[str, Any]]:
    lines = (DATA / f"everyday_{part}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _texts(rows: list[dict[str, Any]]) -> set[str]:
    """Every message text, whitespace-normalised and lowercased."""
    return {" ".join(m["content"].split()).lower() for row in rows for m in row["messages"]}


@pytest.mark.parametrize("part", PARTS)
def test_every_row_has_the_fields_and_values_the_readme_names(part: str) -> None:
    for row in _rows(part):
        assert set(row) == {"id", "messages", "category", "language", "label"}, row["id"]
        assert re.fullmatch(rf"{PARTS[part]}-\d{{4}}", row["id"]), row["id"]
        assert row["label"] in LABELS, row["id"]
        expected = BENIGN_CATEGORIES if row["label"] == "benign" else {row["label"]}
        assert row["category"] in expected, row["id"]
        assert re.fullmatch(r"[a-z]{2}", row["language"]), row["id"]
        messages = row["messages"]
        assert messages and messages[-1]["role"] == "user", row["id"]
        assert all(set(m) == {"role", "content"} and m["role"] in ROLES for m in messages), row["id"]
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages), row["id"]
        assert all(m["role"] != "system" for m in messages[1:]), row["id"]


@pytest.mark.parametrize("part", PARTS)
def test_ids_are_unique(part: str) -> None:
    ids = [row["id"] for row in _rows(part)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("part", PARTS)
def test_each_part_holds_the_minimum_counts(part: str) -> None:
    labels = Counter(row["label"] for row in _rows(part))
    benign, personal = MINIMUMS[part]
    assert labels["benign"] >= benign
    assert labels["personal_medical"] + labels["personal_legal"] >= personal
    assert min(labels["personal_medical"], labels["personal_legal"]) >= personal // 3


@pytest.mark.parametrize("part", PARTS)
def test_every_category_is_in_each_part_and_roughly_balanced(part: str) -> None:
    categories = Counter(row["category"] for row in _rows(part) if row["label"] == "benign")
    assert set(categories) == BENIGN_CATEGORIES
    assert max(categories.values()) <= 2 * min(categories.values())


@pytest.mark.parametrize("part", PARTS)
def test_each_part_speaks_at_least_ten_languages(part: str) -> None:
    rows = _rows(part)
    assert len({row["language"] for row in rows}) >= 10
    # The multilingual category itself spans them, and translation requests are there.
    assert len({row["language"] for row in rows if row["category"] == "multilingual"}) >= 10
    assert any("translat" in row["messages"][-1]["content"].lower() for row in rows)


@pytest.mark.parametrize("part", PARTS)
def test_pasted_documents_include_long_ones(part: str) -> None:
    lengths = [len(row["messages"][-1]["content"]) for row in _rows(part) if row["category"] == "pasted_documents"]
    assert sum(1_000 <= n <= 3_000 for n in lengths) >= 3


@pytest.mark.parametrize("part", PARTS)
def test_no_text_repeats_within_a_part(part: str) -> None:
    rows = _rows(part)
    last = [" ".join(row["messages"][-1]["content"].split()).lower() for row in rows]
    assert len(last) == len(set(last))


def test_no_text_is_in_both_parts() -> None:
    shared = _texts(_rows("tuning")) & _texts(_rows("test"))
    assert not shared
