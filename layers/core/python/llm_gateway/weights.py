"""The numeric helpers the shipped models share: one format for a model's weight arrays inside its
JSON artefact, and one logistic function.

A packed array is `{"shape": [...], "dtype": "<f4", "data": "<base64 of the raw little-endian
values>"}`: parsing it is about ten times faster than a JSON list of numbers, and it holds the
values exactly (`<f8` where a model scores in float64, `<f2` where halving the size moves scores
by less than the model's noise). Every artefact under `*/data/` stores its weight arrays this way;
scalars (biases, thresholds) and calibration tables stay JSON numbers."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import numpy.typing as npt

# exp(±40) keeps the logistic's result within float64's range while it is 1 (or 0) to 1e-17
_LOGIT_LIMIT = 40.0


def encode_array(array: Any, dtype: str = "<f4") -> dict[str, Any]:
    """`array` packed as `dtype` (little-endian float32 unless told) with its shape."""
    data = np.ascontiguousarray(array, dtype=dtype)
    return {"shape": list(data.shape), "dtype": dtype, "data": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(packed: dict[str, Any]) -> npt.NDArray[Any]:
    """The array of `encode_array`'s output, in its stored precision (read-only)."""
    dtype = np.dtype(packed.get("dtype", "<f4"))
    raw = np.frombuffer(base64.b64decode(packed["data"]), dtype=dtype)
    shape = [int(n) for n in packed["shape"]]
    if raw.size != math.prod(shape):
        raise ValueError(f"a packed array holds {raw.size} values, not the {shape} its shape says")
    return raw.reshape(shape)


def sigmoid(z: float) -> float:
    """The logistic function of one logit."""
    return 1.0 / (1.0 + math.exp(-max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, z))))


def sigmoid_array(z: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The logistic function of every logit in `z`, as float64."""
    clipped = np.clip(np.asarray(z, dtype=np.float64), -_LOGIT_LIMIT, _LOGIT_LIMIT)
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-clipped))
    return result
