"""The `distill_evaluate` function: the distillation workflow's evaluation on AWS.

The workflow's batch transform ran the collection's test split (`test-invocations.jsonl`, one
endpoint request a line) through the trained student on the model endpoint's container; its
output holds one `InvocationResponse` a line, in the same order. Each answer is scored against the
teacher's stored answer with the eval scorers, the cases built as `distill eval` builds them
(`distill.evaluate.test_cases`, `--scoring auto`). The teacher's stored answers are the reference,
so the teacher's pass rate is 1 and the quality ratio is the student's pass rate (`distill eval`
has the teacher answer again, which usually passes less than all: the bar here is stricter).
`report.json` goes to `distill/<tenant>/<run_id>/eval/`; the workflow registers a student that
meets its tenant's `training.min_quality_ratio` as a model package (PendingManualApproval) with
the `metadata` returned here. The function reads the run's data and eval files and writes the
report, nothing else.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from ..config import GatewayConfig
from ..endpoint_contract import InvocationResponse
from ..experiments.scorers import Score, score
from .distill_run import REPORT, DistillRunInvalid, RunFiles, job_name, settings
from .observability import logger, metrics

TEACHER_PASS_RATE = 1.0  # the teacher's stored answers are what each case expects


class EvaluateInput(BaseModel):
    """What the workflow passes: the run (from the collect step) and the training job's model."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: str
    route: str
    run_id: str
    model_data: str  # s3://.../model/<job>/output/model.tar.gz


def _answer(line: str) -> str | None:
    try:
        return InvocationResponse.model_validate_json(line).text
    except ValueError:
        return None


def evaluate_run(run: EvaluateInput, *, config: GatewayConfig, s3: Any, bucket: str) -> dict[str, Any]:
    """Score the transform's answers, write the report; whether the student meets its bar."""
    from ..distill.evaluate import ratio, test_cases

    policy = config.tenants.get(run.tenant)
    if policy is None:
        raise DistillRunInvalid(f"tenant {run.tenant} is not in this configuration")
    files = RunFiles(bucket, run.tenant, run.run_id)
    with tempfile.TemporaryDirectory() as work:
        data = Path(work)
        test = s3.get_object(Bucket=bucket, Key=files.data + "test.jsonl")["Body"].read()
        (data / "test.jsonl").write_bytes(test)
        cases = test_cases(data)
    output = s3.get_object(Bucket=bucket, Key=files.transform_output)["Body"].read().decode("utf-8")
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) != len(cases):
        raise DistillRunInvalid(
            f"the batch transform answered {len(lines)} lines for {len(cases)} test cases ({files.transform_output})"
        )
    results = []
    for case, line in zip(cases, lines, strict=True):
        answer = _answer(line)
        scored = Score(False, 0.0, "not an endpoint response") if answer is None else score(case, answer)
        results.append({"id": case.id, "passed": scored.passed, "value": scored.value, "detail": scored.detail})
    passed = sum(1 for r in results if r["passed"])
    pass_rate = passed / len(results)
    quality = ratio(pass_rate, TEACHER_PASS_RATE)
    bar = policy.training.min_quality_ratio
    report = {
        "tenant": run.tenant,
        "route": run.route,
        "run_id": run.run_id,
        "suite": f"distill:{files.uri(files.data)}test.jsonl",  # as `distill eval` names its suite
        "cases": len(results),
        "passed": passed,
        "pass_rate": round(pass_rate, 4),
        "teacher_pass_rate": TEACHER_PASS_RATE,
        "quality_ratio": quality,
        "bar": bar,
        "meets_bar": quality is not None and quality >= bar,
        "model_data": run.model_data,
        "results": results,
    }
    s3.put_object(Bucket=bucket, Key=files.eval + REPORT, Body=(json.dumps(report, indent=2) + "\n").encode())
    metadata = {
        "tenant": run.tenant,
        "route": run.route,
        "run_id": run.run_id,
        "job_name": job_name(run.tenant, run.run_id),
        "quality_ratio": str(quality),
        "bar": str(bar),
        "cases": str(len(results)),
        "report": files.uri(files.eval + REPORT),
    }
    return {
        "quality_ratio": quality,
        "bar": bar,
        "meets_bar": report["meets_bar"],
        "cases": len(results),
        "passed": passed,
        "report": metadata["report"],
        "metadata": metadata,
        "description": f"distilled student of tenant {run.tenant}, route {run.route}, run {run.run_id}: "
        f"quality ratio {quality} (bar {bar}) on {len(results)} held-out cases",
    }


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from ..adapters.aws.batch import default_s3_client
    from ..config import load_config

    current = settings()
    run = EvaluateInput.model_validate(event)
    config = load_config(current.config_path)
    found = evaluate_run(run, config=config, s3=default_s3_client(), bucket=current.bucket)
    logger.info("evaluated", extra={"run_id": run.run_id, "quality_ratio": found["quality_ratio"]})
    return found
