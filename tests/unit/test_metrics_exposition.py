"""`/metrics`' text: the in-process counters and distributions rendered by `prometheus_client`, so a
Prometheus server (or its own parser) reads every family with its type and the labels as given."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llm_gateway.observability import InMemoryMetrics


def test_counters_and_distributions_parse_back_with_their_types_and_labels() -> None:
    metrics = InMemoryMetrics()
    metrics.count("cache_lookups", status="exact")
    metrics.count("cache_lookups", 2, status="miss")
    metrics.count("guard_triggers", layer="topic", action="block")  # another label set, another family
    awkward = 'a "quoted" model\\name\nwith a newline'
    metrics.count("route_choice", model=awkward, reason="pinned")
    for value in (0.25, 0.75, 0.5):
        metrics.observe("semantic_similarity", value, tenant="acme")

    families = {f.name: f for f in text_string_to_metric_families(metrics.prometheus())}
    assert families["llm_gateway_cache_lookups"].type == "counter"
    lookups = {s.labels["status"]: s.value for s in families["llm_gateway_cache_lookups"].samples}
    assert lookups == {"exact": 1.0, "miss": 2.0}
    assert [s.labels["model"] for s in families["llm_gateway_route_choice"].samples] == [awkward]
    summary = families["llm_gateway_semantic_similarity"]
    assert summary.type == "summary"
    by_suffix = {s.name.rsplit("_", 1)[-1]: s.value for s in summary.samples}
    assert by_suffix == {"count": 3.0, "sum": 1.5}
    assert families["llm_gateway_semantic_similarity_min"].samples[0].value == 0.25
    assert families["llm_gateway_semantic_similarity_max"].samples[0].value == 0.75
    assert families["llm_gateway_guard_triggers"].samples[0].labels == {"layer": "topic", "action": "block"}


def test_no_metrics_render_as_an_empty_exposition() -> None:
    assert list(text_string_to_metric_families(InMemoryMetrics().prometheus())) == []
