"""Teacher examples from a tenant's stored traffic (`llm-gateway distill collect`).

An example is a request a model answered for the tenant, as its trace keeps it
(`traces.store_content`: the caller's messages and the answer with the PII placeholders the model
saw). Kept, in this order of filters (each counted in the data card):

- the tenant opted in (`training.opt_in`), and the trace is of the route asked for;
- a user asked it: not an eval run's request nor a replay's (the test split of an earlier
  collection, evaluated through the route, must not come back as training data);
- the teacher that answered says `allows_training` (the operator's statement that the provider's
  terms allow training on its outputs): otherwise collection refuses, naming the model;
- a model answered it (no cache hit: a semantic hit answers another question) and every choice
  finished normally (`stop`), with one answer;
- moderation let the answer through (or did not look at it);
- no feedback said it was bad (a thumbs down, a rating of 1 or 2, a failed task);
- no structured PII value is left in it (an email, a phone or card number... that the tenant's
  masking did not catch: the example is dropped, never unmasked into a dataset);
- it is not a near-duplicate of an example kept before it (the semantic cache's embedding of the
  conversation's user and assistant turns, cosine at least `DUPLICATE_COSINE`).

The kept examples are split by time: the oldest share for training, the next for validation, the
newest for the test split (traffic that came after anything the student learned from); `SPLIT`
(80 / 10 / 10 %) unless the caller gives its own shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..guard.pii import find_pii

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..ports import Trace

DUPLICATE_COSINE = 0.95
SPLIT = (80, 10, 10)  # % of the kept examples: train, validation, test
_BAD_RATINGS = (1, 2)


class CollectionRefused(ValueError):
    """Collection cannot go on: the tenant did not opt in, or a teacher's terms are not stated to allow it."""


@dataclass(frozen=True)
class Example:
    request_id: str
    ts: float
    model: str
    messages: list[dict[str, Any]]  # the conversation as the caller sent it, PII masked
    answer: str

    def chat(self) -> dict[str, Any]:
        """The example in the chat fine-tuning format."""
        return {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}


@dataclass
class Collected:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    removed: dict[str, int] = field(default_factory=dict)  # filter -> examples it removed
    read: int = 0
    models: list[str] = field(default_factory=list)
    split: tuple[int, int, int] = SPLIT


def split_shares(raw: str) -> tuple[int, int, int]:
    """Train, validation and test shares from `80,10,10` (whole percentages, each at least 1,
    adding up to 100); ValueError saying what is wrong."""
    parts = raw.replace("/", ",").split(",")
    try:
        shares = tuple(int(part.strip()) for part in parts)
    except ValueError:
        shares = ()
    if len(shares) != 3 or min(shares) < 1 or sum(shares) != 100:
        raise ValueError(
            f"split {raw!r}: three whole percentages for train, validation and test, each at least 1, "
            "adding up to 100 (80,10,10)"
        )
    return shares[0], shares[1], shares[2]


def _finished(trace: Trace) -> bool:
    invoke = next((s for s in trace.steps if s.name == "invoke"), None)
    if invoke is None:
        return False
    reasons = invoke.detail.get("choices") or []
    answer = (trace.content or {}).get("answer") or []
    return bool(reasons) and all(r == "stop" for r in reasons) and len(answer) == 1


def _moderated_ok(trace: Trace) -> bool:
    moderate = next((s for s in trace.steps if s.name == "moderate"), None)
    return moderate is None or moderate.detail.get("outcome") == "passed"


def _scored_down(trace: Trace) -> bool:
    for given in trace.feedback:
        if (given.kind == "thumbs" and given.score < 0) or (given.kind == "rating" and given.score in _BAD_RATINGS):
            return True
        if given.kind == "task" and given.score == 0:
            return True
    return False


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _example(trace: Trace) -> Example:
    content = trace.content or {}
    messages = [
        {"role": str(m.get("role")), "content": _text(m.get("content"))}
        for m in content.get("messages") or []
        if m.get("role") in ("system", "developer", "user", "assistant")
    ]
    answer = _text(((content.get("answer") or [{}])[0]).get("content"))
    return Example(trace.request_id, trace.ts, str(trace.model), messages, answer)


def _has_pii(example: Example) -> bool:
    texts = [example.answer, *(str(m["content"]) for m in example.messages)]
    return any(find_pii(text) for text in texts)


def licence_gate(config: GatewayConfig, models: Iterable[str]) -> None:
    """Refuse unless every teacher is stated to allow training on its outputs."""
    refused = sorted(m for m in set(models) if not (m in config.models and config.models[m].allows_training))
    if refused:
        raise CollectionRefused(
            f"the terms of {', '.join(refused)} are not stated to allow training on its outputs: set "
            "`allows_training: true` on the model in the configuration only where the provider's terms allow it"
        )


def collect(
    config: GatewayConfig,
    tenant: str,
    route: str,
    traces: Iterable[Trace],
    embed: Callable[[list[str]], Any],
    split: tuple[int, int, int] = SPLIT,
) -> Collected:
    """The tenant's examples on the route from its traces (oldest first), filtered, deduplicated
    and split by time (`split`: % train, validation, test). `embed`: texts -> unit vectors (rows),
    for the near-duplicate check."""
    policy = config.tenants.get(tenant)
    if policy is None:
        raise CollectionRefused(f"tenant {tenant} is not in this configuration")
    if not policy.training.opt_in:
        raise CollectionRefused(f"tenant {tenant} has not opted in to training on its traffic (`training.opt_in`)")
    if route not in policy.routes:
        raise CollectionRefused(f"tenant {tenant} has no route {route}")
    removed = {
        "not an answer on the route": 0,
        "an eval or a replay": 0,
        "not a finished model answer": 0,
        "moderated": 0,
        "scored down": 0,
        "pii": 0,
    }
    kept: list[Example] = []
    read = 0
    for trace in traces:
        read += 1
        if trace.tenant != tenant or trace.route != route or trace.outcome != "ok" or not trace.model:
            removed["not an answer on the route"] += 1
        elif trace.offline or trace.replay_of is not None:
            removed["an eval or a replay"] += 1
        elif not _finished(trace):
            removed["not a finished model answer"] += 1
        elif not _moderated_ok(trace):
            removed["moderated"] += 1
        elif _scored_down(trace):
            removed["scored down"] += 1
        else:
            example = _example(trace)
            if _has_pii(example):
                removed["pii"] += 1
            else:
                kept.append(example)
    models = sorted({e.model for e in kept})
    licence_gate(config, models)
    unique = _deduplicated(kept, embed)
    removed["near-duplicate"] = len(kept) - len(unique)
    unique.sort(key=lambda e: (e.ts, e.request_id))
    n = len(unique)
    cut_train, cut_validation = round(n * split[0] / 100), round(n * (split[0] + split[1]) / 100)
    return Collected(
        unique[:cut_train], unique[cut_train:cut_validation], unique[cut_validation:], removed, read, models, split
    )


def _deduplicated(examples: list[Example], embed: Callable[[list[str]], Any]) -> list[Example]:
    """Each example unless it is a near-duplicate of one kept before it."""
    import numpy as np

    if not examples:
        return []
    # what the caller asked (the tenant's system prompt is the same on every request of a route)
    texts = [
        "\n".join(f"{m['role']}: {m['content']}" for m in e.messages if m["role"] in ("user", "assistant"))
        for e in examples
    ]
    vectors = np.asarray(embed(texts), dtype=np.float32)
    kept: list[int] = []
    for i in range(len(examples)):
        if kept and float(np.max(vectors[kept] @ vectors[i])) >= DUPLICATE_COSINE:
            continue
        kept.append(i)
    return [examples[i] for i in kept]
