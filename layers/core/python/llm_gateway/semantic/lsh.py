"""Random-hyperplane LSH (SimHash) for cosine similarity, in bands.

`bands * bits` random hyperplanes, drawn once from a fixed seed so every process (every Lambda)
hashes alike. A vector's signature is the sign of its dot product with each hyperplane; band `i`
is bits `[i*bits, (i+1)*bits)` read as an integer. Two vectors at angle t agree on one bit with
probability p = 1 - t/pi, on a whole band with p**bits, so a stored neighbour shares at least one
band with the query with probability `1 - (1 - p**bits)**bands` (`band_match_probability`).

Defaults, 16 bands x 8 bits: at cosine 0.85 (p = 0.82) a neighbour is found with probability 0.98,
at 0.90 with 0.996; an unrelated text (MiniLM cosine ~0.2, p = 0.56) shares a band with ~1.6%
per band, so a search fetches 16 buckets holding roughly 1/256 of the scope each. Changing any
parameter changes every bucket key: stored entries become unreachable (and expire), never wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .index import DIMENSIONS

DEFAULT_BANDS = 16
DEFAULT_BITS = 8
DEFAULT_SEED = 20_240_601


def band_match_probability(cosine: float, bands: int = DEFAULT_BANDS, bits: int = DEFAULT_BITS) -> float:
    """Probability that two vectors at this cosine share at least one band."""
    agree = 1.0 - math.acos(max(-1.0, min(1.0, cosine))) / math.pi
    return 1.0 - (1.0 - agree**bits) ** bands


@dataclass(frozen=True)
class HyperplaneLSH:
    bands: int = DEFAULT_BANDS
    bits: int = DEFAULT_BITS
    seed: int = DEFAULT_SEED
    dimensions: int = DIMENSIONS
    _planes: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _weights: npt.NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 62 or self.bands < 1:
            raise ValueError("bands must be >= 1 and bits within 1..62")
        planes = np.random.default_rng(self.seed).standard_normal((self.bands * self.bits, self.dimensions))
        object.__setattr__(self, "_planes", planes.astype(np.float32))
        object.__setattr__(self, "_weights", (1 << np.arange(self.bits, dtype=np.int64)).astype(np.int64))

    @property
    def name(self) -> str:
        """Identifies the hash family: part of every bucket key, so a change never mixes families."""
        return f"h{self.bands}x{self.bits}s{self.seed}"

    def band_hashes(self, vector: npt.NDArray[np.float32]) -> list[int]:
        """One integer per band for one vector."""
        return [int(h) for h in self.band_hashes_many(vector.reshape(1, -1))[0]]

    def band_hashes_many(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """`(n, bands)` band integers for `(n, dimensions)` vectors."""
        signs = (vectors @ self._planes.T) > 0
        grouped = signs.reshape(len(vectors), self.bands, self.bits).astype(np.int64)
        return grouped @ self._weights
