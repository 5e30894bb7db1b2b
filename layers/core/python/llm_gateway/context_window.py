"""Context windows: whether a request can fit a model's before it is sent, and the one error that
says it cannot (OpenAI's `context_length_exceeded`), whoever finds out — the router or the model.

The router cannot tokenize for every model, so it counts a floor: every piece a byte-level BPE or
SentencePiece pre-tokenizer splits text into (a word with one leading symbol, up to three digits,
a run of punctuation) is at least one token, a word longer than 32 bytes one per 32 bytes, and each
message carries at least 3 tokens of chat template (3 more prime the reply). The floor is never
above the real count: for SmolLM2's tokenizer it is 60-100 % of it on prose, code, JSON, digits and
CJK text (plain English words are one token each), so a request the router refuses can never have
fit. A request over the limit but under the floor reaches the model, whose own exact refusal (a
400 from the model endpoint or a provider) is mapped onto the same error by `upstream_context_error`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from .contracts import ChatCompletionRequest
from .errors import InvalidRequest, ProviderBadRequest

CODE = "context_length_exceeded"
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3
# No vocabulary has a word token longer than this; runs of one symbol ("-----") may be longer.
_LONG_WORD_BYTES = 32
_PIECES = re.compile(r"(?P<word>(?:[^\w\s]|_)?[^\W\d_]+(?:'[^\W\d_]+)*)|\d{1,3}|[^\w\s]+|_+")


def text_token_floor(text: str) -> int:
    """Tokens `text` takes at least, in any common LLM tokenizer."""
    count = 0
    for piece in _PIECES.finditer(text):
        word = piece["word"]
        count += 1 if word is None else max(1, math.ceil(len(word.encode()) / _LONG_WORD_BYTES))
    return count


def prompt_token_floor(request: ChatCompletionRequest) -> int:
    """Tokens the request's messages take at least, chat template included."""
    texts = sum(text_token_floor(message.text()) for message in request.messages)
    return texts + MESSAGE_OVERHEAD_TOKENS * len(request.messages) + REPLY_PRIMING_TOKENS


def context_message(limit: int, prompt_tokens: int, completion_tokens: int = 0, *, at_least: bool = False) -> str:
    """OpenAI's wording of the refusal, with `at least` where the count is the router's floor."""
    floor = "at least " if at_least else ""
    if completion_tokens <= 0:
        return (
            f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
            f"{floor}{prompt_tokens} tokens. Please reduce the length of the messages."
        )
    return (
        f"This model's maximum context length is {limit} tokens. However, you requested {floor}"
        f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, {completion_tokens} in the "
        "completion). Please reduce the length of the messages or completion."
    )


def context_exceeded(limit: int, prompt_tokens: int, completion_tokens: int = 0) -> InvalidRequest:
    """The router's refusal (400 `invalid_request_error`, code `context_length_exceeded`, param
    `messages`) of a request whose floor does not fit `limit`."""
    message = context_message(limit, prompt_tokens, completion_tokens, at_least=True)
    return InvalidRequest(message, param="messages", code=CODE)


# How engines and providers other than OpenAI (whose error carries the code) word the refusal.
_WORDINGS = (
    # llama.cpp: "Requested tokens (2300) exceed context window of 2048"
    re.compile(r"Requested tokens \((?P<prompt>\d+)\) exceed context window of (?P<limit>\d+)"),
    # the endpoint's torch engine: "the prompt has 2300 tokens; this endpoint holds 2047"
    re.compile(r"the prompt has (?P<prompt>\d+) tokens; this endpoint holds (?P<limit>\d+)"),
    # Anthropic: "prompt is too long: 210000 tokens > 200000 maximum"
    re.compile(r"prompt is too long: (?P<prompt>\d+) tokens > (?P<limit>\d+) maximum"),
)


def parse_overflow(message: str) -> tuple[int, int] | None:
    """(prompt tokens, context limit) from an engine's or a provider's "prompt too long" message."""
    for wording in _WORDINGS:
        found = wording.search(message)
        if found is not None:
            return int(found["prompt"]), int(found["limit"])
    return None


def upstream_context_error(body: object) -> ProviderBadRequest | None:
    """The upstream's 400 as `context_length_exceeded` (param `messages`) when its error body says
    the prompt did not fit the model's context; None for any other error. `body` is the parsed
    error body, or its JSON text: `{"error": {"message", "code"}}` (the model endpoint, OpenAI's
    HTTP body), `{"message", "code"}` (the OpenAI SDK's `exc.body`) or Anthropic's
    `{"type": "error", "error": {...}}`."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    error = body.get("error", body) if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return None
    message = error.get("message")
    message = message[:500] if isinstance(message, str) else ""
    overflow = parse_overflow(message)
    if overflow is not None:
        return ProviderBadRequest(context_message(overflow[1], overflow[0]), param="messages", code=CODE)
    if error.get("code") == CODE or "maximum context length is" in message:
        return ProviderBadRequest(
            message or "The prompt does not fit the model's context.", param="messages", code=CODE
        )
    return None
