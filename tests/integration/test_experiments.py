"""A/B experiments through the HTTP API, fake models behind a fake OpenAI upstream: users split
by weight and sticky on their variant (`x-gateway-variant`), each variant's model, parameters and
system prompt sent upstream; task outcomes reported through `POST /v1/feedback` (`kind: task`)
make the report's always-valid verdict; a variant that fails more than the control is stopped by
its guardrail. `llm-gateway experiment start|report|stop`.

The verdict and the guardrail run twice: on the local store (`serve`'s checks), and on the AWS
adapters against moto's server (the experiment in the rollout table, the audit and trace tables,
the `rollout_gates` function judging it and saving its report, the commands with `--table`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llm_gateway.adapters.aws.experiments import DynamoExperimentStore
from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore
from llm_gateway.adapters.local.experiments import REFRESH_S, SqliteExperimentStore
from llm_gateway.adapters.local.rollouts import SqliteRolloutStore
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.cli.main import main
from llm_gateway.config import load_config
from llm_gateway.experiments import ab
from llm_gateway.http.app import create_app
from llm_gateway.ports import Experiment, Variant
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps
from tests.support.aws_gates import deployment
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok, status
from tests.support.model_configs import acme_config
from tests.support.moto_server import MotoServer, moto_server
from tests.support.servers import serve

USERS = 300


def answer(body: dict[str, Any]) -> Behaviour:
    text = str(body["messages"][-1]["content"])
    if body["model"] == "gpt-flaky" and int(text.rsplit(" ", 1)[-1]) % 4 == 0:
        return status(400, message="this model refuses a quarter of the questions")  # not retried, no fallback
    return ok(f"{body['model']} answers.", prompt_tokens=10, completion_tokens=3)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def gateway(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()
    path = acme_config(tmp_path, upstream.base_url, ["gpt-a", "gpt-b", "gpt-flaky"], "{model: gpt-a}")
    db = tmp_path / "gateway.db"
    stores = {"experiments": SqliteExperimentStore(db), "rollouts": SqliteRolloutStore(db)}
    deps = make_deps(load_config(str(path)), db=db, traces=SqliteTraceStore(db), **stores)
    with serve(create_app(InProcessRunner(deps))) as url:
        yield {"url": url, "config": str(path), "deps": deps, **stores}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws_gateway(
    upstream: FakeServer, moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The gateway on the AWS adapters; the scheduled gates function judges the experiments."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()
    path = acme_config(tmp_path, upstream.base_url, ["gpt-a", "gpt-b", "gpt-flaky"], "{model: gpt-a}")
    with deployment(moto, monkeypatch, path) as deployed:
        client = moto.client("dynamodb")
        stores = {
            "experiments": DynamoExperimentStore(deployed.names["rollouts"], client),
            "rollouts": DynamoRolloutStore(deployed.names["rollouts"], client),
        }
        deps = dataclasses.replace(
            make_deps(load_config(str(path)), db=tmp_path / "gateway.db"),
            audit=deployed.audit,
            traces=deployed.traces,
            **stores,
        )
        with serve(create_app(InProcessRunner(deps))) as url:
            yield {"url": url, "config": str(path), "deps": deps, **stores, "deployed": deployed}


@pytest.fixture(params=["sqlite", "aws"])
def any_gateway(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue("gateway" if request.param == "sqlite" else "aws_gateway")  # type: ignore[no-any-return]


def judge(gateway: dict[str, Any]) -> list[Experiment]:
    """The guardrails, judged where the gateway judges them: `serve`'s check, or the gates function."""
    if "deployed" in gateway:
        stopped = gateway["deployed"].gates()["stopped"]
        return [gateway["experiments"].get(experiment_id) for experiment_id in stopped]
    return ab.check(gateway["experiments"], lambda e: ab.analyse(gateway["deps"].audit.query, e))


def run(gateway: dict[str, Any], *arguments: str) -> int:
    table = gateway["deployed"].table_option if "deployed" in gateway and arguments[1] != "plan" else []
    return main([*arguments, *table, "--config", gateway["config"]])


def start_experiment(
    gateway: dict[str, Any], capsys: pytest.CaptureFixture[str], variants: list[str], *options: str
) -> str:
    """`experiment start` on acme's route with these variants and options; its id."""
    command = ["experiment", "start", "--tenant", "acme", "--route", "default", *options]
    assert run(gateway, *command, *[x for v in variants for x in ("--variant", v)]) == 0
    experiment_id = capsys.readouterr().out.split()[1].rstrip(":")
    time.sleep(REFRESH_S + 0.1)  # the serving process reads the store's experiments once a second
    return experiment_id


def ask_everyone(gateway: dict[str, Any], round_: int) -> dict[str, tuple[str, str]]:
    """Each user asks once: user -> (variant header, request id)."""
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    seen = {}
    for i in range(USERS):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": f"Round {round_} question {i}"}], user=f"u{i}"
            )
        except openai.BadRequestError:
            continue  # the flaky model's refusals
        seen[f"u{i}"] = (raw.headers["x-gateway-variant"], raw.headers["x-request-id"])
    return seen


def test_users_stay_on_their_variant_and_task_feedback_makes_the_verdict(
    any_gateway: dict[str, Any], upstream: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gateway = any_gateway
    (tmp_path / "terse.txt").write_text("Answer in one sentence.")
    terse = f"terse=gpt-b,temperature=0.1,system={tmp_path / 'terse.txt'}"
    experiment_id = start_experiment(gateway, capsys, ["control", terse], "--weights", "50,50", "--mde", "0.2")
    first, second = ask_everyone(gateway, 1), ask_everyone(gateway, 2)
    assert {u: v for u, (v, _) in first.items()} == {u: v for u, (v, _) in second.items()}  # sticky
    arms = [v.split(":")[1] for v, _ in first.values()]
    assert 100 <= arms.count("terse") <= 200  # about half of 300
    sent = [r.body for r in upstream.script.requests if r.body]
    terse = [b for b in sent if b["model"] == "gpt-b"]
    assert terse and all(
        b["temperature"] == 0.1 and b["messages"][0]["content"] == "Answer in one sentence." for b in terse
    )
    assert all(b.get("temperature") is None for b in sent if b["model"] == "gpt-a")
    # the client reports whether each answer did the job: the terse variant does it far more often
    for user, (variant, request_id) in first.items():
        done = 1 if variant.endswith(":terse") else int(int(user[1:]) % 3 == 0)
        given = httpx.post(
            gateway["url"] + "/v1/feedback",
            json={"request_id": request_id, "score": done, "kind": "task"},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        )
        assert given.status_code == 200, given.text
    assert judge(gateway) == []  # on AWS, the gates function saves the report `report` reads
    assert run(gateway, "experiment", "report", experiment_id, "--json") == 0
    report = json.loads(capsys.readouterr().out)[0]
    terse_vs = report["against_control"]["terse"]
    assert terse_vs["verdict"] == "better" and terse_vs["p_value"] < 0.05 and terse_vs["interval"][0] > 0
    assert report["variants"]["terse"]["metric_rate"] == 1.0 and report["variants"]["control"]["requests"] > 0
    assert run(gateway, "experiment", "stop", experiment_id, "--winner", "terse") == 0
    assert gateway["experiments"].get(experiment_id).winner == "terse"
    time.sleep(REFRESH_S + 0.1)
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    after = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "x 1"}]
    )
    assert "x-gateway-variant" not in after.headers  # stopped: every user back on the route


def test_a_variant_that_fails_more_is_stopped_by_its_guardrail(
    any_gateway: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = any_gateway
    experiment_id = start_experiment(gateway, capsys, ["control", "flaky=gpt-flaky"], "--mde", "0.1")
    ask_everyone(gateway, 1)
    stopped = judge(gateway)
    assert [e.experiment_id for e in stopped] == [experiment_id]
    assert (stopped[0].reason or "").startswith("guardrail: flaky: error rate at least")


def test_experiment_commands_refuse_what_cannot_run(
    gateway: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["experiment", "start", "--tenant", "acme", "--route", "default", "--mde", "0.1"]
    for variants, message in (
        (["--variant", "control"], "at least two variants"),
        (["--variant", "a", "--variant", "a"], "different names"),
        (["--variant", "a", "--variant", "b=gpt-nope"], "gpt-nope is not a model"),
        (["--variant", "a", "--variant", "b,temperature=hot"], "temperature is a number"),
        (["--variant", "a", "--variant", "b,temperature=nan"], "finite number"),
        (["--variant", "a", "--variant", "b,stream=1"], "'stream' is not one of"),
        (["--variant", "a", "--variant", "b", "--weights", "1"], "one positive number per variant"),
        (["--variant", "a b", "--variant", "c"], "variant 'a b'"),
    ):
        assert run(gateway, *base, *variants) == 2, variants
        assert message in capsys.readouterr().err, variants
    assert run(gateway, "rollout", "start", "--tenant", "acme", "--route", "default", "--to", "gpt-b") == 0
    assert run(gateway, *base, "--variant", "a", "--variant", "b") == 2
    assert "is rolling out" in capsys.readouterr().err


def test_an_experiment_naming_a_model_the_configuration_no_longer_has_is_left_alone(gateway: dict[str, Any]) -> None:
    """Every request of the route is answered as configured, never a 500 for the whole route."""
    gone = Experiment(
        experiment_id="ex_0123456789ab",
        tenant="acme",
        route="default",
        variants=[Variant(name="control"), Variant(name="gone", model="gpt-gone")],
        mde=0.1,
        started_at=time.time(),
    )
    gateway["experiments"].save(gone)
    time.sleep(REFRESH_S + 0.1)
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": f"Question {i}"}], user=f"u{i}"
        )
        assert raw.http_response.status_code == 200 and "x-gateway-variant" not in raw.headers
