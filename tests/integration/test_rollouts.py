"""Staged rollouts through the HTTP API, fake models behind a fake OpenAI upstream: a candidate that
fails 10 % of requests rolls back on its own within its first stage, and no user outside the
stage's share is ever sent to it (each answer's `x-gateway-variant` against the user's bucket); its
failures never reach the user (the baseline answers them); a healthy candidate advances stage by
stage to 100 %; every transition is kept. `llm-gateway rollout start|status|advance|rollback`.

The first two run twice: on the local store (SQLite, `serve`'s gates), and on the AWS adapters
against moto's server (the rollout, audit and trace tables in DynamoDB, the router reading the
rollout table, the `rollout_gates` function's handler judging them, `rollout ... --table`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore
from llm_gateway.adapters.local.rollouts import REFRESH_S, SqliteRolloutStore
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.aws import rollout_gates
from llm_gateway.cli.main import main
from llm_gateway.config import load_config, parse_config
from llm_gateway.contracts import RouteResult, TenantContext
from llm_gateway.experiments.rollouts import LocalEvidence, RolloutController, bucket, move, with_rollout
from llm_gateway.http.app import create_app
from llm_gateway.ports import Rollout
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps
from tests.support.aws_gates import Deployment, deployment
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok, status
from tests.support.model_configs import acme_config
from tests.support.moto_server import MotoServer, moto_server
from tests.support.servers import serve

USERS = 400


def answer(body: dict[str, Any]) -> Behaviour:
    """gpt-bad fails one request in ten (the same ones on every retry); the others always answer."""
    text = str(body["messages"][-1]["content"])
    if body["model"] == "gpt-bad" and hashlib.sha256(text.encode()).digest()[0] % 10 == 0:
        return status(500)
    return ok(f"{body['model']} says hello.", prompt_tokens=10, completion_tokens=4)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def gateway(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The gateway on the local store, `serve`'s gates."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    path = acme_config(tmp_path, upstream.base_url, ["gpt-old", "gpt-bad", "gpt-good"], "{model: gpt-old}")
    config = load_config(str(path))
    db = tmp_path / "gateway.db"
    deps = make_deps(config, db=db, traces=SqliteTraceStore(db), rollouts=SqliteRolloutStore(db))
    with serve(create_app(InProcessRunner(deps))) as url:
        evidence = LocalEvidence(deps.audit.query, config)  # type: ignore[attr-defined]
        controller = RolloutController(deps.rollouts, evidence)  # type: ignore[arg-type]
        yield {"url": url, "config": path, "controller": controller, "store": deps.rollouts, "evidence": evidence}


class GatesFunction:
    """The `rollout_gates` function as the gates: what it moved, as stored."""

    def __init__(self, deployed: Deployment) -> None:
        self.deployed = deployed

    def check(self) -> list[Rollout]:
        return [self.deployed.rollouts.get(moved["rollout_id"]) for moved in self.deployed.gates()["moved"]]  # type: ignore[misc]


@pytest.fixture
def aws_gateway(
    upstream: FakeServer, moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The gateway on the AWS adapters (DynamoDB on moto), the gates judged by the scheduled function."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    path = acme_config(tmp_path, upstream.base_url, ["gpt-old", "gpt-bad", "gpt-good"], "{model: gpt-old}")
    with deployment(moto, monkeypatch, path) as deployed:
        deps = dataclasses.replace(
            make_deps(load_config(str(path)), db=tmp_path / "gateway.db"),
            audit=deployed.audit,
            traces=deployed.traces,
            rollouts=DynamoRolloutStore(deployed.names["rollouts"], moto.client("dynamodb")),
        )
        with serve(create_app(InProcessRunner(deps))) as url:
            yield {
                "url": url,
                "config": path,
                "controller": GatesFunction(deployed),
                "store": deployed.rollouts,
                "options": deployed.table_option,
                "deployed": deployed,
            }


@pytest.fixture(params=["sqlite", "aws"])
def any_gateway(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue("gateway" if request.param == "sqlite" else "aws_gateway")  # type: ignore[no-any-return]


def start(gateway: dict[str, Any], candidate: str, *options: str) -> str:
    command = ["rollout", "start", "--tenant", "acme", "--route", "default", "--to", candidate, "--stages", "10,50,100"]
    command += [*options, *gateway.get("options", [])]
    assert main([*command, "--no-alerts", "--config", str(gateway["config"])]) == 0
    time.sleep(REFRESH_S + 0.1)  # the serving process reads the store's rollouts once a second
    rollouts = gateway["store"].all("acme")
    return str(rollouts[-1].rollout_id)


def one_round(gateway: dict[str, Any], rollout_id: str, share: float, round_: int) -> dict[str, int]:
    """Every user asks once; each answer's arm is the one the user's bucket gives at `share`."""
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    seen = {"candidate": 0, "baseline": 0}
    for i in range(USERS):
        user = f"user-{i}"
        raw = client.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": f"Round {round_}: question {i} of {user}."}],
            user=user,
            extra_headers={"cache-control": "no-store"},
        )
        assert raw.http_response.status_code == 200  # a failed candidate call is answered by the baseline
        expected = "candidate" if bucket(rollout_id, "acme", f"user:{user}") < share * 100 else "baseline"
        variant = raw.headers.get("x-gateway-variant")
        assert variant == f"{rollout_id}:{expected}", (user, share)
        seen[expected] += 1
    return seen


def test_a_candidate_that_fails_10_percent_rolls_back_within_its_first_stage(
    any_gateway: dict[str, Any], upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = any_gateway
    rollout_id = start(gateway, "gpt-bad", "--min-requests", "100")
    moved = []
    for round_ in range(1, 6):  # the gates judge after each round of every user's request
        seen = one_round(gateway, rollout_id, 10.0, round_)
        assert 20 <= seen["candidate"] <= 60  # about 10 % of the users, and never another one
        moved = gateway["controller"].check()
        if moved:
            break
    assert [(r.rollout_id, r.status, r.stage) for r in moved] == [(rollout_id, "rolled_back", 0)]
    assert "the candidate failed" in (moved[0].reason or "")
    events = gateway["store"].events(rollout_id)
    assert [(e.action, e.actor, e.share) for e in events][1:] == [("rollback", "gates", 0.0)]
    # nobody reaches the candidate any more
    time.sleep(REFRESH_S + 0.1)
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    before = sum(1 for r in upstream.script.requests if r.body and r.body.get("model") == "gpt-bad")
    for i in range(50):
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": f"After: {i}"}], user=f"user-{i}"
        )
        assert "x-gateway-variant" not in raw.headers and raw.headers["x-gateway-model"] == "gpt-old"
    assert sum(1 for r in upstream.script.requests if r.body and r.body.get("model") == "gpt-bad") == before
    capsys.readouterr()
    assert main(["rollout", "status", rollout_id, *gateway.get("options", []), "--config", str(gateway["config"])]) == 0
    printed = capsys.readouterr().out
    assert f"{rollout_id} acme/default gpt-old -> gpt-bad: rolled_back" in printed and "rollback" in printed


def test_a_healthy_candidate_advances_stage_by_stage_to_all_users(
    any_gateway: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = any_gateway
    rollout_id = start(gateway, "gpt-good", "--min-requests", "30", "--error-margin", "0.05", "--latency-ratio", "5")
    shares = [10.0]
    for round_ in range(1, 10):
        seen = one_round(gateway, rollout_id, shares[-1], round_)
        assert seen["candidate"] + seen["baseline"] == USERS
        moved = gateway["controller"].check()
        rollout = gateway["store"].get(rollout_id)
        if moved:
            time.sleep(REFRESH_S + 0.1)
            shares.append(rollout.share)
        if rollout.status != "running":
            break
    assert rollout.status == "completed" and shares == [10.0, 50.0, 100.0, 100.0]
    assert one_round(gateway, rollout_id, 100.0, 99) == {"candidate": USERS, "baseline": 0}
    actions = [e.action for e in gateway["store"].events(rollout_id)]
    assert actions == ["start", "advance", "advance", "complete"]
    capsys.readouterr()
    assert main(["rollout", "status", "--json", *gateway.get("options", []), "--config", str(gateway["config"])]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[-1]["status"] == "completed" and len(shown[-1]["events"]) == 4


def test_rollout_commands_by_hand_and_what_they_refuse(
    gateway: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(gateway["config"])
    rollout_id = start(gateway, "gpt-good")
    assert main(["rollout", "advance", rollout_id, "--config", config]) == 0
    assert "50 % on gpt-good" in capsys.readouterr().out
    assert (
        main(["rollout", "start", "--tenant", "acme", "--route", "default", "--to", "gpt-bad", "--config", config]) == 2
    )
    assert "already rolling out" in capsys.readouterr().err
    assert main(["rollout", "rollback", rollout_id, "--reason", "a customer complained", "--config", config]) == 0
    assert main(["rollout", "rollback", rollout_id, "--config", config]) == 2
    assert "is rolled_back" in capsys.readouterr().err
    for options, message in (
        (["--to", "gpt-nope"], "gpt-nope is not a model"),
        (["--to", "gpt-old"], "already answers with gpt-old"),
        (["--to", "gpt-good", "--stages", "50,10"], "stages are increasing"),
        (["--to", "gpt-good", "--stages", "nan"], "stages are increasing"),
        (["--to", "gpt-good", "--confidence", "2"], "confidence"),
    ):
        command = ["rollout", "start", "--tenant", "acme", "--route", "default", *options, "--config", config]
        assert main(command) == 2, options
        assert message in capsys.readouterr().err, options
    events = gateway["store"].events(rollout_id)
    assert [e.action for e in events] == ["start", "advance", "rollback"]
    assert events[-1].detail["reason"] == "a customer complained" and events[-1].actor.startswith("cli")


def test_the_router_survives_what_could_go_wrong_with_a_rollout(
    gateway: dict[str, Any], upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = str(gateway["config"]), gateway["store"]
    # a gate that is not a finite number is refused, never stored
    command = ["rollout", "start", "--tenant", "acme", "--route", "default", "--to", "gpt-good"]
    assert main([*command, "--latency-ratio", "inf", "--config", config]) == 2
    assert "latency_ratio" in capsys.readouterr().err
    # a second running rollout of the route cannot be stored, whoever starts it
    rollout_id = start(gateway, "gpt-good")
    first = store.get(rollout_id)
    twin = first.model_copy(update={"rollout_id": "ro_000000000000"})
    with pytest.raises(ValueError, match="already rolling out"):
        store.save(twin, store.events(rollout_id)[0].model_copy(update={"rollout_id": twin.rollout_id}))
    # a move decided on a rollout someone changed meanwhile is refused
    assert main(["rollout", "rollback", rollout_id, "--config", config]) == 0
    with pytest.raises(ValueError, match="changed meanwhile"):
        move(store, first, "advance", "the gates held", "gates", time.time(), {})
    assert store.get(rollout_id).status == "rolled_back"
    # a damaged row is passed over: requests are answered
    with sqlite3.connect(gateway["config"].parent / "gateway.db") as db:
        db.execute("INSERT INTO rollouts VALUES ('ro_damaged', 'acme', 'default', 'running', 1.0, '{not json')")
    time.sleep(REFRESH_S + 0.1)
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    answered = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    assert answered.http_response.status_code == 200 and "x-gateway-variant" not in answered.headers


def test_a_candidate_that_refuses_a_request_hands_it_to_the_baseline(
    gateway: dict[str, Any], upstream: FakeServer
) -> None:
    rollout_id = start(gateway, "gpt-good", "--stages", "100")
    upstream.script.push(status(400, message="this model does not take that parameter"))
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}], user="someone"
    )
    assert raw.headers["x-gateway-variant"] == f"{rollout_id}:candidate" and raw.headers["x-gateway-model"] == "gpt-old"
    readings = gateway["evidence"].readings(gateway["store"].get(rollout_id))
    assert (readings.candidate_requests, readings.candidate_failures) == (1, 1)  # counted against the candidate


def test_a_completed_rollout_yields_to_the_configuration_and_can_be_rolled_back(
    gateway: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(gateway["config"])
    rollout_id = start(gateway, "gpt-good", "--stages", "100")
    assert main(["rollout", "advance", rollout_id, "--config", config]) == 0
    assert gateway["store"].get(rollout_id).status == "completed"
    context = TenantContext(tenant="acme", key_id="k1", user="u1")
    planned = RouteResult(route="default", candidates=["gpt-old"])
    loaded = load_config(config)
    assert with_rollout(gateway["store"], loaded, context, planned).candidates[0] == "gpt-good"
    # the configuration names the candidate now
    moved_on = parse_config(gateway["config"].read_text().replace("{model: gpt-old}", "{model: gpt-good}"))
    assert with_rollout(gateway["store"], moved_on, context, planned).variant is None
    assert main(["rollout", "rollback", rollout_id, "--reason", "back after all", "--config", config]) == 0
    time.sleep(REFRESH_S + 0.1)
    assert with_rollout(gateway["store"], loaded, context, planned).variant is None


def test_on_aws_the_deployments_alarm_rolls_back_the_rollouts_that_watch_alerts(
    aws_gateway: dict[str, Any], moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudwatch = moto.client("cloudwatch")
    alarm = f"error-rate-{uuid.uuid4().hex[:8]}"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        MetricName="errors",
        Namespace="LlmGateway",
        Statistic="Sum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    monkeypatch.setenv("ROLLOUT_ALARMS", json.dumps({"error_rate": alarm, "latency_p95": ""}))
    Deployment.forget_settings()
    config, table = str(aws_gateway["config"]), aws_gateway["options"]
    command = ["rollout", "start", "--tenant", "acme", "--route", "default", "--stages", "10,100", *table]
    assert main([*command, "--to", "gpt-good", "--config", config]) == 0
    watching = aws_gateway["store"].all("acme")[-1].rollout_id
    assert main([*command, "--to", "gpt-bad", "--no-alerts", "--config", config]) == 2  # one per route
    assert aws_gateway["controller"].check() == []  # the alarm is not firing: nothing to judge yet
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    moved = aws_gateway["controller"].check()
    assert [(r.rollout_id, r.status) for r in moved] == [(watching, "rolled_back")]
    assert "error_rate" in (moved[0].reason or "")
    # a rollout started with --no-alerts is left alone by the same alarm
    assert main([*command, "--to", "gpt-bad", "--no-alerts", "--config", config]) == 0
    assert aws_gateway["controller"].check() == []
    # what the function refuses to start with
    for bad in ('{"daily_cost": "x"}', "[1]", '{"error_rate": 3}'):
        monkeypatch.setenv("ROLLOUT_ALARMS", bad)
        Deployment.forget_settings()
        with pytest.raises(ValueError, match="ROLLOUT_ALARMS"):
            rollout_gates.controller()
    # `status --check` is the local store's: on AWS the schedule judges
    assert main(["rollout", "status", "--check", *table, "--config", config]) == 2


def _eval_run(folder: Path, target: str, passed: list[bool], suite: str = "extraction") -> Path:
    """An `eval run` report (the fields the gate reads) of one case per entry of `passed`."""
    folder.mkdir()
    results = [{"id": f"case-{i}", "passed": ok} for i, ok in enumerate(passed)]
    report = {"suite": suite, "target": target, "tenant": "acme", "pass_rate": sum(passed) / len(passed)}
    (folder / "report.json").write_text(json.dumps({**report, "results": results}))
    return folder


def test_the_eval_gate_lets_a_rollout_start_only_when_the_candidate_is_not_worse_beyond_the_margin(
    gateway: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(gateway["config"])
    baseline = [i % 5 != 0 for i in range(200)]  # 80 %
    worse = [ok and i % 7 != 0 for i, ok in enumerate(baseline)]  # 23 cases fewer: 68.5 %
    same = [i % 5 != 1 for i in range(200)]  # 80 % too, on other cases
    command = ["rollout", "start", "--tenant", "acme", "--route", "default", "--no-alerts", "--config", config]
    base_run = _eval_run(tmp_path / "base", "gpt-old", baseline)
    refused = ["--to", "gpt-good", "--eval", str(base_run), str(_eval_run(tmp_path / "worse", "gpt-good", worse))]
    assert main([*command, *refused]) == 2
    assert "more than the margin 2.0%" in capsys.readouterr().err
    assert gateway["store"].all("acme") == []
    for options, message in (
        (["--to", "gpt-good", "--eval", str(base_run), str(base_run)], "not gpt-good"),
        (["--to", "gpt-good", "--eval", str(_eval_run(tmp_path / "b", "gpt-bad", same)), str(base_run)], "not gpt-old"),
        (
            ["--to", "gpt-good", "--eval", str(base_run), str(_eval_run(tmp_path / "s", "gpt-good", same, "other"))],
            "different suites",
        ),
        (["--to", "gpt-good", "--eval", str(base_run), str(tmp_path / "nowhere")], "not a run's report"),
        (
            [
                "--to",
                "gpt-good",
                "--eval",
                str(_eval_run(tmp_path / "tiny-b", "gpt-old", [True])),
                str(_eval_run(tmp_path / "tiny-c", "gpt-good", [True])),
            ],
            "at least 30 cases",
        ),
    ):
        assert main([*command, *options]) == 2, options
        assert message in capsys.readouterr().err, options
    # a candidate as good as the baseline (the route's run stands for the baseline) starts, with the comparison kept
    route_run = _eval_run(tmp_path / "route", "default", baseline)
    accepted = ["--to", "gpt-good", "--eval", str(route_run), str(_eval_run(tmp_path / "same", "gpt-good", same))]
    assert main([*command, *accepted, "--eval-margin", "0.1"]) == 0
    (started,) = gateway["store"].events(gateway["store"].all("acme")[-1].rollout_id)
    kept = started.detail["eval"]
    assert kept["cases"] == 200 and kept["pass_rate_a"] == kept["pass_rate_b"] == 0.8
    assert kept["interval"][0] >= -0.1
