"""Metrics: a small port so steps can count without knowing where the numbers go."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


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


class InMemoryMetrics:
    """Counters and summaries (count, sum, min, max) kept in process; `prometheus()` renders them in
    Prometheus' text format through `prometheus_client` (`# TYPE` lines, escaped label values)."""

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
        """The text exposition: `llm_gateway_<name>_total` per counter; per observed distribution a
        summary `llm_gateway_<name>` (`_count`, `_sum`) and gauges `llm_gateway_<name>_min`, `_max`."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self))
        return generate_latest(registry).decode("utf-8")

    def snapshot(self) -> tuple[dict[tuple[str, Labels], float], dict[tuple[str, Labels], list[float]]]:
        with self._lock:
            return dict(self.counters), {k: list(v) for k, v in self.summaries.items()}


class _Snapshot:
    """A `prometheus_client` collector over one `InMemoryMetrics` (label sets may differ per sample)."""

    def __init__(self, metrics: InMemoryMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        counters, summaries = self._metrics.snapshot()
        families: dict[str, Metric] = {}

        def family(name: str, kind: str) -> Metric:
            if name not in families:
                families[name] = Metric(name, "", kind)
            return families[name]

        for (name, labels), value in sorted(counters.items()):
            full = f"llm_gateway_{name}"
            family(full, "counter").add_sample(f"{full}_total", dict(labels), value)
        for (name, labels), (n, total, low, high) in sorted(summaries.items()):
            full = f"llm_gateway_{name}"
            family(full, "summary").add_sample(f"{full}_count", dict(labels), n)
            family(full, "summary").add_sample(f"{full}_sum", dict(labels), total)
            family(f"{full}_min", "gauge").add_sample(f"{full}_min", dict(labels), low)
            family(f"{full}_max", "gauge").add_sample(f"{full}_max", dict(labels), high)
        yield from families.values()
