"""The complexity router's model: how likely a request needs the large model, and the tiers it
goes to for a tenant's single knob.

A logistic regression over the request's heuristic features (`routing.features`, standardised)
and the embedding of its question (the semantic cache's all-MiniLM-L6-v2), trained by
`scripts/train_router.py` on packaged data (`routing.complexity_data`). Its logit is
Platt-calibrated, so the score is the probability that the request is "hard" at the reference
mix. The artefact also carries the distribution of scores on that mix (out-of-fold, as quantiles):
a target share of traffic for the cheaper models becomes a score threshold by reading that
distribution, and `llm-gateway route-calibrate` computes the same thresholds from a tenant's own
prompts when its traffic differs from the reference.

N models, cheapest first: the share kept off the largest model is split evenly between the cheaper
ones in order of score — the least complex requests go to the cheapest model.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contracts import ChatCompletionRequest
from ..weights import decode_array, sigmoid
from .features import FEATURE_NAMES, question_text, request_features

if TYPE_CHECKING:
    from ..config import ComplexityRouting, Price
    from ..semantic.embeddings import Embedder

ARTEFACT_PATH = Path(__file__).parent / "data" / "complexity.json"
EMBED_CHARS = 2000  # the embedding model reads 256 tokens at most: no use tokenising more


def _floats(packed: dict[str, Any]) -> tuple[float, ...]:
    """A packed float64 vector of the artefact (`weights.encode_array`) as Python floats."""
    return tuple(float(v) for v in decode_array(packed).ravel())


@dataclass(frozen=True)
class ComplexityModel:
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    heuristic_weights: tuple[float, ...]
    embedding_weights: tuple[float, ...]  # empty: a heuristics-only model
    bias: float
    platt: tuple[float, float]
    quantiles: tuple[float, ...]  # scores at evenly spaced shares 0..1 of the reference mix

    @classmethod
    def from_artefact(cls, artefact: dict[str, Any]) -> ComplexityModel:
        if tuple(artefact["features"]) != FEATURE_NAMES:
            raise ValueError("the complexity artefact was trained on other features; rerun scripts/train_router.py")
        quantiles = tuple(float(q) for q in artefact["quantiles"])
        if len(quantiles) < 2 or any(b < a for a, b in itertools.pairwise(quantiles)):
            raise ValueError("the complexity artefact's quantiles must be at least two ascending scores")
        return cls(
            mean=_floats(artefact["mean"]),
            scale=_floats(artefact["scale"]),
            heuristic_weights=_floats(artefact["weights"]["heuristic"]),
            embedding_weights=_floats(artefact["weights"]["embedding"]),
            bias=float(artefact["bias"]),
            platt=(float(artefact["platt"][0]), float(artefact["platt"][1])),
            quantiles=quantiles,
        )

    @property
    def uses_embedding(self) -> bool:
        return bool(self.embedding_weights)

    def logit(self, features: Sequence[float], embedding: Sequence[float] | None) -> float:
        z = self.bias
        for value, mean, scale, weight in zip(features, self.mean, self.scale, self.heuristic_weights, strict=True):
            z += (value - mean) / scale * weight
        if self.embedding_weights:
            if embedding is None:
                raise ValueError("this complexity model needs the question's embedding")
            z += math.fsum(e * w for e, w in zip(embedding, self.embedding_weights, strict=True))
        return z

    def probability(self, logit: float) -> float:
        a, b = self.platt
        x = a * logit + b
        return sigmoid(x)

    def share_below(self, score: float) -> float:
        """The share of the reference mix scoring below `score` (the inverse of `threshold`)."""
        q = self.quantiles
        if score <= q[0]:
            return 0.0
        if score > q[-1]:
            return 1.0
        i = bisect.bisect_left(q, score)  # q[i-1] < score <= q[i]
        step = 1.0 / (len(q) - 1)
        lo, hi = q[i - 1], q[i]
        return ((i - 1) + ((score - lo) / (hi - lo) if hi > lo else 1.0)) * step

    def threshold(self, share: float) -> float:
        """The score below which `share` of the reference mix falls (linear between quantiles)."""
        return quantile(self.quantiles, share, presorted_grid=True)


def quantile(values: Sequence[float], share: float, *, presorted_grid: bool = False) -> float:
    """The `share` quantile of `values` (linear interpolation); `presorted_grid`: `values` already
    are the quantiles at evenly spaced shares."""
    if not 0.0 <= share <= 1.0:
        raise ValueError("a share is between 0 and 1")
    ordered = list(values) if presorted_grid else sorted(values)
    if not ordered:
        raise ValueError("no scores")
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def tier_shares(small_share: float, tiers: int) -> list[float]:
    """The cumulative shares at which the tiers change: the share kept off the largest model,
    split evenly between the `tiers - 1` cheaper ones."""
    if tiers < 2:
        raise ValueError("complexity routing needs at least two models")
    return [small_share * (i + 1) / (tiers - 1) for i in range(tiers - 1)]


def share_for_cost(target_per_1k_usd: float, costs: Sequence[float]) -> float:
    """The share of traffic to keep off the largest model so that 1,000 requests cost
    `target_per_1k_usd`, given one request's cost on each model (cheapest first; the kept-off
    share is split evenly between the cheaper ones). 0 when the large model alone meets the
    target, 1 when even the cheaper ones alone do not."""
    large = costs[-1]
    cheap = sum(costs[:-1]) / (len(costs) - 1)
    target = target_per_1k_usd / 1000
    if target >= large:
        return 0.0
    if large <= cheap:
        return 1.0
    return min(1.0, (large - target) / (large - cheap))


def knob_share(routing: ComplexityRouting, prices: Sequence[Price]) -> float:
    """The share of traffic a share or cost knob keeps off the largest model (`prices`: one per model)."""
    if routing.small_share is not None:
        return routing.small_share
    if routing.max_cost_per_1k_usd is None:
        raise ValueError("this route's knob is explicit thresholds, not a share or a cost")
    costs = [price.cost(routing.prompt_tokens, routing.completion_tokens) for price in prices]
    return share_for_cost(routing.max_cost_per_1k_usd, costs)


def knob_thresholds(routing: ComplexityRouting, prices: Sequence[Price], model: ComplexityModel) -> list[float]:
    """The score thresholds between a route's tiers for its knob, read from the reference mix."""
    if routing.thresholds is not None:
        return list(routing.thresholds)
    return [model.threshold(s) for s in tier_shares(knob_share(routing, prices), len(routing.models))]


def tier_weights(routing: ComplexityRouting, prices: Sequence[Price], model: ComplexityModel) -> list[float]:
    """The share of traffic each model of the route gets at its knob (on the reference mix for
    explicit thresholds)."""
    if routing.thresholds is not None:
        cumulative = [model.share_below(t) for t in routing.thresholds]
    else:
        cumulative = tier_shares(knob_share(routing, prices), len(routing.models))
    edges = [0.0, *cumulative, 1.0]
    return [high - low for low, high in itertools.pairwise(edges)]


def calibrated_thresholds(scores: Sequence[float], small_share: float, tiers: int) -> list[float]:
    """The thresholds that split `scores` (a tenant's own traffic) at the knob's shares, for a
    route's `thresholds` when its traffic differs from the reference mix."""
    return [round(quantile(scores, s), 6) for s in tier_shares(small_share, tiers)]


def tier_of(score: float, thresholds: Sequence[float]) -> int:
    """The tier (0 = cheapest) of a score: the number of thresholds at or below it."""
    return bisect.bisect_right(list(thresholds), score)


class ComplexityScorer:
    """Scores requests; loads the embedding model on first use when the artefact needs it."""

    def __init__(self, model: ComplexityModel, embedder: Embedder | None = None) -> None:
        self.model = model
        self._embedder = embedder

    def score(self, request: ChatCompletionRequest) -> float:
        features = request_features(request)
        embedding = None
        if self.model.uses_embedding:
            embedding = self._embed(question_text(request))
        return self.model.probability(self.model.logit(features, embedding))

    def _embed(self, text: str) -> list[float]:
        if self._embedder is None:
            from ..semantic.embeddings import default_embedder

            self._embedder = default_embedder()
        # The whole question when it is short (the semantic cache embeds the same text: one
        # embedding for both), its start when long (the model reads 256 tokens at most).
        row: list[float] = self._embedder.embed_one(text if len(text) <= EMBED_CHARS else text[:EMBED_CHARS]).tolist()
        return row


def read_model(path: Path = ARTEFACT_PATH) -> ComplexityModel:
    try:
        artefact = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RuntimeError(f"{path} is missing: run `python scripts/train_router.py`") from exc
    return ComplexityModel.from_artefact(artefact)


@functools.lru_cache(maxsize=1)
def default_scorer() -> ComplexityScorer:
    return ComplexityScorer(read_model())
