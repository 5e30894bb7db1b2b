"""Keyword and regex blocklists compiled once into a single alternation."""

from __future__ import annotations

import re

from ..config import Blocklist


class CompiledBlocklist:
    """Keywords match case-insensitively on word boundaries; patterns are regular expressions.

    All rules become one regex with a named group per rule, so a check is one scan of the text.
    The matching rule is reported by its index (`keyword[2]`, `pattern[0]`), never by its text,
    so the audit trail does not repeat what was blocked.
    """

    def __init__(self, blocklist: Blocklist) -> None:
        parts = [f"(?P<k{i}>\\b{re.escape(word)}\\b)" for i, word in enumerate(blocklist.keywords)]
        parts += [f"(?P<p{i}>{pattern})" for i, pattern in enumerate(blocklist.patterns)]
        self._regex = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def first_match(self, text: str) -> str | None:
        """The rule that matches first in `text`, or None."""
        if self._regex is None or not text:
            return None
        match = self._regex.search(text)
        if match is None or match.lastgroup is None:
            return None
        kind = "keyword" if match.lastgroup[0] == "k" else "pattern"
        return f"{kind}[{match.lastgroup[1:]}]"
