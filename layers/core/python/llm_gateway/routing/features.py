"""Heuristic features of a request for the complexity router: length, code, math, multi-step
structure, constraints, conversation depth, images. Plain Python, ~0.1 ms per request.

The features are deliberately coarse counts; the learnt weights (routing/data/complexity.json)
decide what they mean together with the embedding of the question.
"""

from __future__ import annotations

import math
import re

from ..contracts import ChatCompletionRequest, ImagePart

FEATURE_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_sentences",
    "mean_word_length",
    "code",
    "math",
    "latex",
    "digits",
    "multi_step",
    "reasoning_words",
    "constraints",
    "enumeration",
    "identifiers",
    "log_turns",
    "image",
)

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|return\b|if .*:$|for .*:$|while .*:$|#include|public |private |"
    r"function\b|const |let |var |SELECT |INSERT |UPDATE |CREATE |\}|\{|//|/\*|<\w+[^>]*>)"
)
_CODE_TOKEN = re.compile(r"(?:\w+\(\)|\w+\.\w+\(|[{};]\s*$|=>|->|::|==|!=|\+\+|&&|\|\|)", re.MULTILINE)
_MATH_SYMBOL = re.compile(r"[=^<>\u2264\u2265\u2211\u222b\u221a\u03c0\u00b1\u00d7\u00f7]|\d\s*[-+*/]\s*\d")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi|alpha|beta|theta|mathbb|left|right)\b|\$[^$]+\$")
_MULTI_STEP = re.compile(
    r"\b(?:step|steps|then|after that|first|second|finally|next|each|every|all of|both|"
    r"and then|followed by|multiple|several|scenario|plan)\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"\b(?:prove|derive|explain why|why|compare|analy[sz]e|evaluate|justify|optimi[sz]e|implement|design|"
    r"algorithm|complexity|calculate|compute|determine|estimate|probability|theorem|equation|integer|"
    r"function|hypothes[ie]s|trade-?offs?|critique|argue|infer|deduce|solve)\b",
    re.IGNORECASE,
)
_CONSTRAINT = re.compile(
    r"\b(?:must|exactly|at least|at most|no more than|without|only|include|including|format|"
    r"words|sentences|paragraphs|bullet|json|table|keyword|constraint|ensure|should not|do not)\b",
    re.IGNORECASE,
)
_ENUMERATION = re.compile(r"^\s*(?:\d+[.)]|[-*•]|\(?[a-z]\))\s", re.MULTILINE)
_IDENTIFIER = re.compile(r"\b(?:[a-z]+[A-Z]\w*|\w+_\w+|[A-Z]{2,}\d*)\b")


def question_text(request: ChatCompletionRequest) -> str:
    """What the router judges: the latest user message (the system prompt is the tenant's own and
    the same for every request of a route)."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text()
    return request.messages[-1].text()


def has_image(request: ChatCompletionRequest) -> bool:
    return any(
        not isinstance(m.content, str) and m.content is not None and any(isinstance(p, ImagePart) for p in m.content)
        for m in request.messages
    )


def heuristic_features(text: str, *, turns: int = 1, image: bool = False) -> list[float]:
    """The `FEATURE_NAMES` values of one question (`turns`: user turns in the conversation)."""
    words = _WORD.findall(text)
    lines = [line for line in text.splitlines() if line.strip()]
    chars = len(text)
    n_words = len(words)
    code_lines = sum(1 for line in lines if _CODE_LINE.match(line))
    code = ("```" in text) + code_lines / max(len(lines), 1) + min(len(_CODE_TOKEN.findall(text)), 10) / 10
    digits = sum(ch.isdigit() for ch in text)
    per_word = 1 / max(n_words, 1)
    return [
        math.log1p(chars),
        math.log1p(n_words),
        math.log1p(len(lines)),
        math.log1p(len(_SENTENCE_END.findall(text))),
        sum(len(w) for w in words) * per_word,
        code,
        min(len(_MATH_SYMBOL.findall(text)), 20) / 20,
        float(bool(_LATEX.search(text))),
        digits / max(chars, 1),
        min(len(_MULTI_STEP.findall(text)), 10) / 10,
        min(len(_REASONING.findall(text)), 10) / 10,
        min(len(_CONSTRAINT.findall(text)), 10) / 10,
        min(len(_ENUMERATION.findall(text)), 10) / 10,
        min(len(_IDENTIFIER.findall(text)), 10) / 10,
        math.log1p(turns),
        float(image),
    ]


def request_features(request: ChatCompletionRequest) -> list[float]:
    turns = sum(1 for m in request.messages if m.role == "user")
    return heuristic_features(question_text(request), turns=turns, image=has_image(request))
