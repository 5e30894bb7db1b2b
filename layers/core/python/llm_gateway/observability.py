"""Metrics: a small port so steps can count without knowing where the numbers go."""

from __future__ import annotations

import bisect
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

# Histogram bucket upper bounds, chosen by the distribution's name (`buckets_for`).
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MILLISECONDS = tuple(round(bound * 1000, 3) for bound in SECONDS)
TOKENS = (1.0, 8.0, 32.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0)
SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # scores, similarities, complexity
COUNTS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
_SHARE_NAMES = ("_score", "_similarity", "_complexity")


def buckets_for(name: str) -> tuple[float, ...]:
    """The buckets of a distribution, by its name's unit: `_seconds`, `_ms`, `_tokens`, a score or
    similarity in [0, 1]; anything else counts things."""
    if name.endswith("_seconds"):
        return SECONDS
    if name.endswith("_ms"):
        return MILLISECONDS
    if name.endswith("_tokens"):
        return TOKENS
    if name.endswith(_SHARE_NAMES):
        return SHARES
    return COUNTS


class Histogram:
    """One label set's observations: a count per bucket (the last is +Inf), their sum and number."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def copy(self) -> Histogram:
        twin = Histogram(self.bounds)
        twin.counts, twin.sum = list(self.counts), self.sum
        return twin


class InMemoryMetrics:
    """Counters and histograms kept in process; `prometheus()` renders them in Prometheus' text
    format through `prometheus_client` (`# TYPE` lines, escaped label values, cumulative `le`
    buckets, so a Prometheus server computes p50/p95/p99 with `histogram_quantile`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self.histograms: dict[tuple[str, Labels], Histogram] = {}

    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted(dimensions.items())))] += value

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        key = (name, tuple(sorted(dimensions.items())))
        with self._lock:
            histogram = self.histograms.get(key)
            if histogram is None:
                histogram = self.histograms[key] = Histogram(buckets_for(name))
            histogram.add(value)

    def prometheus(self) -> str:
        """The text exposition: `llm_gateway_<name>_total` per counter; per distribution a histogram
        `llm_gateway_<name>` (`_bucket{le=...}`, `_count`, `_sum`)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self))
        return generate_latest(registry).decode("utf-8")

    def snapshot(self) -> tuple[dict[tuple[str, Labels], float], dict[tuple[str, Labels], Histogram]]:
        with self._lock:
            return dict(self.counters), {k: v.copy() for k, v in self.histograms.items()}


class _Snapshot:
    """A `prometheus_client` collector over one `InMemoryMetrics` (label sets may differ per sample)."""

    def __init__(self, metrics: InMemoryMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        counters, histograms = self._metrics.snapshot()
        families: dict[str, Metric] = {}

        def family(name: str, kind: str) -> Metric:
            if name not in families:
                families[name] = Metric(name, "", kind)
            return families[name]

        for (name, labels), value in sorted(counters.items()):
            full = f"llm_gateway_{name}"
            family(full, "counter").add_sample(f"{full}_total", dict(labels), value)
        for (name, labels), histogram in sorted(histograms.items()):
            full = f"llm_gateway_{name}"
            metric, running = family(full, "histogram"), 0
            for bound, n in zip([*(repr(float(b)) for b in histogram.bounds), "+Inf"], histogram.counts, strict=True):
                running += n
                metric.add_sample(f"{full}_bucket", {**dict(labels), "le": bound}, running)
            metric.add_sample(f"{full}_count", dict(labels), running)
            metric.add_sample(f"{full}_sum", dict(labels), histogram.sum)
        yield from families.values()
