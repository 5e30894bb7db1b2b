"""Distillation end to end on this machine's CPU (`tests/support/distill_pipeline.py`): a few
hundred support emails answered by the teacher through `llm-gateway serve`, collected, a LoRA
student of the packaged SmolLM2-135M trained on them, evaluated against the teacher on the newest
traffic it never saw, registered with a staged rollout, and answering through `serve` by name."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.distill_pipeline import PACKAGED, STUDENT, run

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(tmp_path_factory.mktemp("distill"))


def test_the_teachers_traffic_becomes_a_time_split_collection(pipeline: dict[str, Any]) -> None:
    assert pipeline["traffic"] == {"requests": 300, "teacher_right": 300}
    examples = pipeline["collect"]["examples"]
    assert sum(examples.values()) >= 285  # varied emails: few near-duplicates
    assert examples["test"] >= 55  # the newest fifth: enough for the rollout's eval gate


def test_the_student_keeps_at_least_90_percent_of_the_teachers_quality_where_the_untuned_model_fails(
    pipeline: dict[str, Any],
) -> None:
    found = pipeline["eval"]
    runs = found["runs"]
    assert runs["teacher"]["pass_rate"] == 1.0  # deterministic: it answers its stored answers again
    assert found["quality_ratio"] >= 0.9 and found["meets_bar"] is True, pipeline["student_misses"]
    assert runs["baseline"]["target"] == PACKAGED and runs["baseline"]["pass_rate"] <= 0.2
    assert found["cost_ratio"] is not None and found["cost_ratio"] < 0.05  # local prices against the teacher's
    assert found["weights_sha256"] and found["model"]["lifecycle"] == "candidate"


def test_the_registered_student_answers_through_serve_and_its_rollout_started(pipeline: dict[str, Any]) -> None:
    register = pipeline["register"]
    assert register["exit"] == 0, (register["err"], pipeline["student_misses"])
    registered, started = register["out"].strip().splitlines()
    assert registered.startswith(f"registered {STUDENT} (candidate, tenant acme)")
    assert started.startswith("started ") and f"acme/support teacher -> {STUDENT} at 1 %" in started
    assert "# The distillation pipeline's configuration" in pipeline["config"]  # the operator's file, edited
    served = pipeline["served"]
    # the eval measures quality; this is the student answering by name (a margin for one CPU's
    # greedy decoding against another's: about 1 % of its answers here miss a digit of an order)
    assert served["right"] >= 0.8 * served["asked"], served["replies"]
    endpoints = {tuple(e["models"]): e["state"] for e in pipeline["health"]["model_endpoints"]}
    assert endpoints == {(PACKAGED,): "ready", (STUDENT,): "ready"}
