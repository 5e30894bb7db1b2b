"""A small classifier head over the sentence embedding the gateway already computes (the
semantic cache's query, the topic filter's message): one ReLU hidden layer and a logistic output,
in numpy (~0.1 ms). Trained with scikit-learn's `MLPClassifier` by the guard training scripts and
shipped inside a classifier's artefact as packed float32 arrays (`weights.encode_array`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..weights import decode_array, encode_array, sigmoid, sigmoid_array


def encode_head(mlp: Any) -> dict[str, Any]:
    """The artefact form of a fitted one-hidden-layer `MLPClassifier` (binary, ReLU)."""
    if len(mlp.coefs_) != 2 or mlp.activation != "relu":
        raise ValueError("the head is one ReLU hidden layer")
    return {
        "w1": encode_array(mlp.coefs_[0]),
        "b1": encode_array(mlp.intercepts_[0]),
        "w2": encode_array(mlp.coefs_[1][:, 0]),
        "b2": float(mlp.intercepts_[1][0]),
    }


class EmbeddingHead:
    def __init__(self, spec: dict[str, Any]) -> None:
        self._w1 = decode_array(spec["w1"]).astype(np.float32)
        self._b1 = decode_array(spec["b1"]).astype(np.float32)
        self._w2 = decode_array(spec["w2"]).astype(np.float32)
        self._b2 = float(spec["b2"])
        if self._w1.shape != (self._w1.shape[0], self._b1.shape[0]) or self._w2.shape != self._b1.shape:
            raise ValueError("embedding head weights do not fit together")

    @property
    def dim(self) -> int:
        return int(self._w1.shape[0])

    def logit(self, vector: np.ndarray) -> float:
        hidden = np.maximum(vector @ self._w1 + self._b1, 0.0)
        return float(hidden @ self._w2) + self._b2

    def probability(self, vector: np.ndarray) -> float:
        return sigmoid(self.logit(vector))

    def logits(self, matrix: np.ndarray) -> np.ndarray:
        hidden = np.maximum(matrix @ self._w1 + self._b1, 0.0)
        result: np.ndarray = (hidden @ self._w2 + self._b2).astype(np.float64)
        return result

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        return sigmoid_array(self.logits(matrix))
