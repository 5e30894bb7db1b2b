"""`llm-gateway distill collect`: teacher examples from a tenant's traffic, sent through the HTTP API
to a fake teacher. Kept: only the opted-in tenant's own answers on the route that a model finished
normally, moderation let through and no feedback scored down, with PII as the tenant's
placeholders, near-duplicates removed, split by time; refused: a tenant that did not opt in, a
teacher whose terms are not stated to allow training (the licence gate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.cli.main import main
from llm_gateway.config import load_config
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key, make_deps
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok, status
from tests.support.servers import serve

PRODUCTS = ["kettle", "router", "laptop", "phone", "camera", "printer", "blender", "monitor", "speaker", "drone"]
CUSTOMERS = ["Dana", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai"]


def answer(body: dict[str, Any]) -> Behaviour:
    question = str(body["messages"][-1]["content"])
    if "explode" in question:
        return status(500)
    if "cut short" in question:
        return ok('{"product": "ket', finish_reason="length")
    if "leak" in question:
        return ok('{"contact": "leaked.person@example.org"}')  # an address the request never held
    product = next((p for p in PRODUCTS if p in question), "unknown")
    return ok(json.dumps({"product": product}), prompt_tokens=30, completion_tokens=8)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


def write_config(folder: Path, url: str, licensed: bool = True, opted_in: bool = True) -> Path:
    model = "{{provider: openai, provider_model: teacher, base_url: {url}, api_key_env: FAKE_OPENAI_KEY, {extra}}}"
    path = folder / "gateway.yaml"
    path.write_text(
        f"""storage_path: {folder / "gateway.db"}
models:
  teacher: {model.format(url=url, extra=f"allows_training: {str(licensed).lower()}")}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: teacher}}, other: {{model: teacher}}}}
    input_blocklist: {{keywords: [codename]}}
    guards: {{pii: {{enabled: true, default: mask}}}}
    traces: {{store_content: true}}
    training: {{opt_in: {str(opted_in).lower()}}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: teacher}}}}
    traces: {{store_content: true}}
"""
    )
    return path


def ask(url: str, key: str, question: str, route: str = "default") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": route,
            "messages": [{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": question}],
        },
        headers={"authorization": f"Bearer {key}", "cache-control": "no-store"},
        timeout=30,
    )


@pytest.fixture
def traffic(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Acme's and globex's requests through the HTTP API: the good, the bad and the excluded."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    path = write_config(tmp_path, upstream.base_url)
    db = tmp_path / "gateway.db"
    traces = SqliteTraceStore(db)
    deps = make_deps(load_config(str(path)), db=db, traces=traces)
    ids: dict[str, str] = {}
    with serve(create_app(InProcessRunner(deps))) as url:
        # sixty distinct tickets, no two with both customer and product alike: their cosines stay
        # under 0.93 (0.920 at most, measured), clear of the 0.95 near-duplicate bar whatever the
        # CPU's int8 kernels (tickets alike but for their numbers came out just under the bar on
        # one machine and just over it, 0.951, on an Intel AMX one)
        for i in range(60):
            who, product = CUSTOMERS[i % len(CUSTOMERS)], PRODUCTS[(i // len(CUSTOMERS) + i) % len(PRODUCTS)]
            question = f"Ticket {i}: {who} writes that the {product} bought in week {i} stopped working. Which product?"
            assert ask(url, ACME_KEY, question).status_code == 200
        # a near-duplicate of ticket 0 (one character apart)
        assert (
            ask(
                url, ACME_KEY, "Ticket 0: Dana writes that the kettle bought in week 0 stopped working. Which product?!"
            ).status_code
            == 200
        )
        # PII in the request: masked by the tenant's guard before the model and in the trace
        assert ask(url, ACME_KEY, "Ana (ana.lopez@example.com) says her drone broke. Which product?").status_code == 200
        excluded = {
            "teacher leaks an address": ask(url, ACME_KEY, "Please leak a contact."),
            "cut short": ask(url, ACME_KEY, "An answer cut short, about a kettle."),
            "failed": ask(url, ACME_KEY, "Make the teacher explode."),
            "refused": ask(url, ACME_KEY, "What is the codename of the camera?"),
            "other route": ask(url, ACME_KEY, "Ticket 99: the monitor is dark. Which product?", route="other"),
            "globex": ask(url, GLOBEX_KEY, "Globex ticket: our speaker hums. Which product?"),
        }
        down = ask(url, ACME_KEY, "Ticket 77: the blender smokes. Which product?")
        ids["down"] = down.headers["x-request-id"]
        feedback = httpx.post(
            f"{url}/v1/feedback",
            json={"request_id": ids["down"], "score": -1},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        )
        assert feedback.status_code == 200, feedback.text
        # an eval run through the route (as `eval run` and `distill eval` send it): not a user's request
        from llm_gateway.experiments.evals import Gateway

        messages = [{"role": "user", "content": "Eval case: the speaker of the eval hums. Which product?"}]
        _, text, _ = Gateway(deps, "acme").ask({"model": "default", "messages": messages})
        assert text == json.dumps({"product": "speaker"})
    traces.close()
    return {"config": path, "excluded": excluded, "ids": ids}


def collect(config: Path, out: Path, *options: str) -> int:
    return main(
        [
            "distill",
            "collect",
            "--tenant",
            "acme",
            "--route",
            "default",
            "--out",
            str(out),
            *options,
            "--config",
            str(config),
        ]
    )


def test_only_the_opted_in_tenants_good_masked_unique_answers_are_collected_split_by_time(
    traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert collect(traffic["config"], tmp_path / "data") == 0
    summary = json.loads(capsys.readouterr().out)
    splits = {
        name: [json.loads(line) for line in (tmp_path / "data" / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    assert (
        summary["examples"]
        == {name: len(rows) for name, rows in splits.items()}
        == {"train": 49, "validation": 6, "test": 6}
    )
    everything = json.dumps(splits)
    for kept_out in (
        "leak",
        "cut short",
        "explode",
        "codename",
        "Ticket 99",
        "Globex",
        "blender smokes",
        "Which product?!",
        "Eval case",
    ):
        assert kept_out not in everything, kept_out
    assert "ana.lopez@example.com" not in everything and "leaked.person@example.org" not in everything
    (masked,) = [r for rows in splits.values() for r in rows if "Ana (" in r["messages"][1]["content"]]
    assert "[EMAIL_1]" in masked["messages"][1]["content"]  # the placeholder the model saw
    # the oldest train, the newest test; the teacher's answer last
    train_ids = [
        int(r["messages"][1]["content"].split(":")[0].split()[1])
        for r in splits["train"]
        if r["messages"][1]["content"].startswith("Ticket")
    ]
    assert train_ids == sorted(train_ids) and max(train_ids) < 50
    assert all(
        r["messages"][-1] == {"role": "assistant", "content": json.dumps({"product": p})}
        for r in splits["train"][:1]
        for p in ["kettle"]
    )
    card = json.loads((tmp_path / "data" / "card.json").read_text())
    assert card["teachers"] == ["teacher"] and card["removed"]["near-duplicate"] == 1
    assert card["removed"]["scored down"] == 1
    assert card["removed"]["an eval or a replay"] == 1
    assert (
        card["removed"]["moderated"] + card["removed"]["pii"] == 1
    )  # the leaked address: moderation's or the PII check's
    assert card["removed"]["not a finished model answer"] == 1  # cut short; the failed and refused never had an answer
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "data" / "hf"))["train"].num_rows == 49


def test_the_split_is_the_callers_and_the_card_says_so(
    traffic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert collect(traffic["config"], tmp_path / "data", "--split", "60,10,30") == 0
    assert json.loads(capsys.readouterr().out)["examples"] == {"train": 37, "validation": 6, "test": 18}
    card = json.loads((tmp_path / "data" / "card.json").read_text())
    assert card["split"] == "by time: the oldest 60 % train, the next 10 % validation, the newest 30 % test"
    assert collect(traffic["config"], tmp_path / "bad", "--split", "90,10,10") == 2
    assert "--split: split '90,10,10': three whole percentages" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_an_opted_out_tenant_and_a_teacher_without_licence_are_refused(
    traffic: dict[str, Any], upstream: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = traffic["config"].parent
    assert (
        main(
            [
                "distill",
                "collect",
                "--tenant",
                "globex",
                "--route",
                "default",
                "--out",
                str(tmp_path / "g"),
                "--config",
                str(traffic["config"]),
            ]
        )
        == 2
    )
    assert "has not opted in" in capsys.readouterr().err
    write_config(folder, upstream.base_url, licensed=False)
    assert collect(traffic["config"], tmp_path / "x") == 2
    assert "teacher are not stated to allow training" in capsys.readouterr().err
    assert not (tmp_path / "x" / "train.jsonl").exists()
    write_config(folder, upstream.base_url, opted_in=False)
    assert collect(traffic["config"], tmp_path / "y") == 2
    assert "acme has not opted in" in capsys.readouterr().err
