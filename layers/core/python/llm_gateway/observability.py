"""Metrics: a small port so steps can count without knowing where the numbers go."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Protocol


class MetricsSink(Protocol):
    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        """Add `value` to a counter."""
        ...

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        """Record one observation of a distribution (e.g. the similarity of a served hit)."""
        ...


class NullMetrics:
    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        return None

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        return None


Labels = tuple[tuple[str, str], ...]
_MIN, _MAX = 'stat="min"', 'stat="max"'


class InMemoryMetrics:
    """Counters and summaries (count, sum, min, max) kept in process; rendered in Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self.summaries: dict[tuple[str, Labels], list[float]] = {}

    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(dimensions.items())))] += value

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        key = (name, tuple(sorted(dimensions.items())))
        with self._lock:
            current = self.summaries.get(key)
            if current is None:
                self.summaries[key] = [1.0, value, value, value]
            else:
                current[0] += 1
                current[1] += value
                current[2] = min(current[2], value)
                current[3] = max(current[3], value)

    def prometheus(self) -> str:
        def labels(pairs: Labels, extra: str = "") -> str:
            parts = [f'{k}="{v}"' for k, v in pairs] + ([extra] if extra else [])
            return "{" + ",".join(parts) + "}" if parts else ""

        lines: list[str] = []
        with self._lock:
            for (name, pairs), value in sorted(self.counters.items()):
                lines.append(f"llm_gateway_{name}_total{labels(pairs)} {value:g}")
            for (name, pairs), (n, total, low, high) in sorted(self.summaries.items()):
                lines.append(f"llm_gateway_{name}_count{labels(pairs)} {n:g}")
                lines.append(f"llm_gateway_{name}_sum{labels(pairs)} {total:g}")
                lines.append(f"llm_gateway_{name}{labels(pairs, _MIN)} {low:g}")
                lines.append(f"llm_gateway_{name}{labels(pairs, _MAX)} {high:g}")
        return "\n".join(lines) + "\n"
