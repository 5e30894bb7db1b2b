"""Tier-1 keyword and regex blocklists, compiled once: one Aho-Corasick scan per message.

A list of hundreds of keywords as one regex alternation costs milliseconds per message (the
engine tries every alternative at every position). Here keywords go into an Aho-Corasick
automaton (`pyahocorasick`, C), so a message is scanned once whatever the list's size. Each
pattern contributes its longest required literal (read from the pattern's parse tree) to the same
automaton and is run only when that literal occurs; a pattern without one runs on every message.

Semantics are those of the single alternation `\\bkw0\\b|\\bkw1\\b|...|pat0|pat1|...` searched
case-insensitively: the leftmost match wins, and at one position the earlier rule (keywords
before patterns, then list order). The matching rule is reported by its index (`keyword[2]`,
`pattern[0]`), never by its text, so the audit trail does not repeat what was blocked.
"""

from __future__ import annotations

import re
from re import _parser as sre_parse  # type: ignore[attr-defined,unused-ignore]  # the stdlib's regex parser
from typing import Any

import ahocorasick

from .config import Blocklist

_MIN_LITERAL = 3


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _boundary(text: str, i: int) -> bool:
    """`\\b` at position i: a word character on exactly one side."""
    before = i > 0 and _is_word(text[i - 1])
    after = i < len(text) and _is_word(text[i])
    return before != after


def required_literal(pattern: str) -> str | None:
    """The longest run of literal characters every match of `pattern` must contain (lowercased),
    or None when there is none of at least 3 characters (e.g. a top-level alternation)."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return None
    best, run = "", ""
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            run += chr(arg)
        elif name == "AT":  # anchors (\b, ^, $) consume nothing: a literal run continues across them
            continue
        else:
            best, run = max(best, run, key=len), ""
    best = max(best, run, key=len)
    return best.lower() if len(best) >= _MIN_LITERAL else None


class CompiledBlocklist:
    """Keywords match case-insensitively on word boundaries; patterns are regular expressions."""

    def __init__(self, blocklist: Blocklist) -> None:
        self._keywords = [word.lower() for word in blocklist.keywords]
        self._patterns = [re.compile(p, re.IGNORECASE) for p in blocklist.patterns]
        self._unfiltered: list[int] = []
        self._automaton: Any = None
        entries: dict[str, list[tuple[str, int]]] = {}
        for i, word in enumerate(self._keywords):
            entries.setdefault(word, []).append(("k", i))
        for i, pattern in enumerate(blocklist.patterns):
            literal = required_literal(pattern)
            if literal is None:
                self._unfiltered.append(i)
            else:
                entries.setdefault(literal, []).append(("p", i))
        if entries:
            self._automaton = ahocorasick.Automaton()
            for literal, rules in entries.items():
                self._automaton.add_word(literal, (len(literal), tuple(rules)))
            self._automaton.make_automaton()
        # The reference semantics, for texts whose lowercase form changes length (rare Unicode).
        parts = [f"(?P<k{i}>\\b{re.escape(word)}\\b)" for i, word in enumerate(blocklist.keywords)]
        parts += [f"(?P<p{i}>{pattern})" for i, pattern in enumerate(blocklist.patterns)]
        self._regex = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def first_match(self, text: str) -> str | None:
        """The rule that matches first in `text`, or None."""
        if self._regex is None or not text:
            return None
        lowered = text.lower()
        if len(lowered) != len(text):
            return self._first_by_regex(text)
        best: tuple[int, int, int] | None = None  # (start, 0 keyword / 1 pattern, index)
        candidates = set(self._unfiltered)
        if self._automaton is not None:
            for end, (length, rules) in self._automaton.iter(lowered):
                start = end - length + 1
                for kind, i in rules:
                    if kind == "p":
                        candidates.add(i)
                    elif _boundary(text, start) and _boundary(text, end + 1):
                        best = min(best, (start, 0, i)) if best is not None else (start, 0, i)
        for i in candidates:
            match = self._patterns[i].search(text)
            if match is not None:
                found = (match.start(), 1, i)
                best = min(best, found) if best is not None else found
        if best is None:
            return None
        return f"{'keyword' if best[1] == 0 else 'pattern'}[{best[2]}]"

    def _first_by_regex(self, text: str) -> str | None:
        if self._regex is None:
            return None
        match = self._regex.search(text)
        if match is None or match.lastgroup is None:
            return None
        kind = "keyword" if match.lastgroup[0] == "k" else "pattern"
        return f"{kind}[{match.lastgroup[1:]}]"
