"""`/metrics`' text: the in-process counters and histograms rendered by `prometheus_client`, so a
Prometheus server (or its own parser) reads every family with its type, the labels as given and
cumulative buckets by the distribution's unit."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llm_gateway.observability import InMemoryMetrics


def test_counters_and_histograms_parse_back_with_their_types_labels_and_buckets() -> None:
    metrics = InMemoryMetrics()
    metrics.count("cache_lookups", status="exact")
    metrics.count("cache_lookups", 2, status="miss")
    metrics.count("guard_triggers", layer="topic", action="block")  # another label set, another family
    awkward = 'a "quoted" model\\name\nwith a newline'
    metrics.count("route_choice", model=awkward, reason="pinned")
    for value in (0.25, 0.75, 0.5):
        metrics.observe("semantic_similarity", value, tenant="acme")
    for seconds in (0.004, 0.2, 0.3, 7.0, 500.0):
        metrics.observe("request_duration_seconds", seconds, tenant="acme", outcome="ok")

    families = {f.name: f for f in text_string_to_metric_families(metrics.prometheus())}
    assert families["llm_gateway_cache_lookups"].type == "counter"
    lookups = {s.labels["status"]: s.value for s in families["llm_gateway_cache_lookups"].samples}
    assert lookups == {"exact": 1.0, "miss": 2.0}
    assert [s.labels["model"] for s in families["llm_gateway_route_choice"].samples] == [awkward]
    similarity = families["llm_gateway_semantic_similarity"]
    assert similarity.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in similarity.samples if s.name.endswith("_bucket")}
    assert (buckets["0.2"], buckets["0.3"], buckets["0.5"], buckets["0.8"], buckets["+Inf"]) == (0, 1, 2, 3, 3)
    totals = {s.name.rsplit("_", 1)[-1]: s.value for s in similarity.samples if not s.name.endswith("_bucket")}
    assert totals == {"count": 3.0, "sum": 1.5}
    duration = families["llm_gateway_request_duration_seconds"]
    seconds = {s.labels["le"]: s.value for s in duration.samples if s.name.endswith("_bucket")}
    # cumulative: 0.004 in the first bucket, 7 s under 10 s, 500 s only in +Inf
    assert (seconds["0.005"], seconds["0.25"], seconds["5.0"], seconds["10.0"], seconds["120.0"], seconds["+Inf"]) == (
        1,
        2,
        3,
        4,
        4,
        5,
    )
    assert all(s.labels["tenant"] == "acme" and s.labels["outcome"] == "ok" for s in duration.samples)
    assert families["llm_gateway_guard_triggers"].samples[0].labels == {"layer": "topic", "action": "block"}


def test_no_metrics_render_as_an_empty_exposition() -> None:
    assert list(text_string_to_metric_families(InMemoryMetrics().prometheus())) == []
