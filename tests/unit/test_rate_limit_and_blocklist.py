"""Token buckets and compiled blocklists."""

from __future__ import annotations

import random

import pytest

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.blocklist import CompiledBlocklist
from llm_gateway.config import Blocklist, RateLimit


def test_bucket_admits_its_burst_then_says_how_long_to_wait() -> None:
    limiter = MemoryRateLimiter()
    limit = RateLimit(requests_per_minute=60, burst=3)
    assert [limiter.acquire("t", limit, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("t", limit, 100.0) == pytest.approx(1.0)
    assert limiter.acquire("t", limit, 100.5) == pytest.approx(0.5)
    assert limiter.acquire("t", limit, 101.0) == 0.0  # one token refilled after a second


def test_buckets_are_independent() -> None:
    limiter = MemoryRateLimiter()
    limit = RateLimit(requests_per_minute=60, burst=1)
    assert limiter.acquire("a", limit, 0.0) == 0.0
    assert limiter.acquire("b", limit, 0.0) == 0.0
    assert limiter.acquire("a", limit, 0.0) > 0


def test_keywords_match_whole_words_case_insensitively() -> None:
    blocklist = CompiledBlocklist(Blocklist(keywords=["secret plan", "bomb"]))
    assert blocklist.first_match("the SECRET PLAN is ready") == "keyword[0]"
    assert blocklist.first_match("a bombastic speech") is None
    assert blocklist.first_match("a bomb.") == "keyword[1]"


def test_patterns_report_their_index_not_their_text() -> None:
    blocklist = CompiledBlocklist(Blocklist(keywords=["x-ray"], patterns=[r"\b\d{3}-\d{2}-\d{4}\b"]))
    assert blocklist.first_match("ssn 123-45-6789") == "pattern[0]"
    assert blocklist.first_match("ssn 123-456-789") is None


def test_empty_blocklist_matches_nothing() -> None:
    assert CompiledBlocklist(Blocklist()).first_match("anything at all") is None


def test_the_automaton_agrees_with_the_single_regex_reference() -> None:
    # Random lists and texts built from the same vocabulary, so matches, overlaps, ties at one
    # position and word-boundary cases all occur; the regex alternation is the reference.
    rng = random.Random(13)
    vocabulary = ["plan", "secret", "secret plan", "x-ray", "ray", "a1", "bomb", "bombs", "c++", "_id", "42"]
    for _ in range(300):
        keywords = rng.sample(vocabulary, rng.randint(0, 5))
        patterns = rng.sample([r"\bbomb\w*", r"\d{3}-\d{2}", r"plan(s|ned)?\b", r"x|y", r"ray\d+"], rng.randint(0, 3))
        blocklist = CompiledBlocklist(Blocklist(keywords=keywords, patterns=patterns))
        for _ in range(20):
            words = rng.choices([*vocabulary, "the", "Secret", "PLAN", "xray", "ray7", "123-45", "-", " ", "."], k=8)
            text = rng.choice(["", " ", "_"]).join(words)
            assert blocklist.first_match(text) == blocklist._first_by_regex(text), (keywords, patterns, text)


def test_patterns_without_a_required_literal_still_run() -> None:
    blocklist = CompiledBlocklist(Blocklist(patterns=[r"\b\d{3}-\d{2}-\d{4}\b", r"cat|dog"]))
    assert blocklist.first_match("call 123-45-6789 now") == "pattern[0]"
    assert blocklist.first_match("a dog here") == "pattern[1]"
    assert blocklist.first_match("İstanbul has a cat") == "pattern[1]"  # lowercasing changes the length
