"""Fine-tuning at the provider (`distill.provider`): a collection uploaded to OpenAI's fine-tuning
jobs API and the job waited for, through the real `openai` SDK against the wire-compatible fake
on 127.0.0.1. Proved: the uploads are the collection's files and the result a pinned candidate; a
collection OpenAI would refuse is refused before any upload; a failed job, an API error and a
job still running at the deadline end as FineTuningFailed with the provider's words and no key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llm_gateway.config import GatewayConfig, ModelConfig, Price, hash_key, parse_config
from llm_gateway.distill.provider import (
    FineTuneJob,
    FineTuningFailed,
    FineTuningRefused,
    OpenAIFineTuning,
    registered_model,
    submit_and_wait,
    wait,
)
from llm_gateway.errors import ConfigError
from tests.conftest import ACME_KEY, RecordingSleep
from tests.support.fake_finetuning import FineTuneBook, fine_tuning_book
from tests.support.fake_providers import FakeServer, delay, fake_server, status

KEY = "sk-fine-tuning-secret-1234"
BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeServer]:
    with fake_server("openai") as server:
        yield server


@pytest.fixture
def upstream(openai_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setenv("FAKE_FT_KEY", KEY)
    openai_server.script.reset()
    fine_tuning_book(openai_server.script).reset()
    return openai_server


def book(server: FakeServer) -> FineTuneBook:
    return fine_tuning_book(server.script)


def gateway_config(url: str) -> GatewayConfig:
    return parse_config(
        f"""
models:
  mini: {{provider: openai, provider_model: {BASE}, base_url: {url}, api_key_env: FAKE_FT_KEY,
         allows_training: true, retires_on: 2027-07-18, price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
  claude: {{provider: anthropic, provider_model: claude-haiku-4-5-20251001, base_url: {url}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: mini}}}}
    allowed_models: [claude]
"""
    )


def chat(i: int, answer: str | None = None) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Answer with the order as JSON."},
            {"role": "user", "content": f"Ticket {i}: my kettle order {1000 + i} is late"},
            {"role": "assistant", "content": answer or json.dumps({"order": 1000 + i, "product": "kettle"})},
        ]
    }


def collection(folder: Path, train: list[Any], validation: list[Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation or []), ("test", [chat(99)])):
        lines = (r if isinstance(r, str) else json.dumps(r) for r in rows)
        (folder / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


def tuner(server: FakeServer, **options: Any) -> OpenAIFineTuning:
    return OpenAIFineTuning("mini", gateway_config(server.base_url).models["mini"], **options)


# --------------------------------------------------------------------------- the job succeeds


def test_a_collection_is_fine_tuned_from_its_own_train_and_validation_files(
    upstream: FakeServer, tmp_path: Path
) -> None:
    # Given a collection of 12 training and 2 validation examples, and jobs that take 2 looks a stage
    data = collection(tmp_path / "data", [chat(i) for i in range(12)], [chat(20), chat(21)])
    book(upstream).looks_per_stage = 2

    # When the CLI's call fine-tunes the configuration's `mini` on it
    result = submit_and_wait(gateway_config(upstream.base_url), data, "mini", "tickets", poll_s=0.0, timeout_s=30)

    # Then OpenAI got the two files as written (not the test split) and made the model on `mini`'s version
    (job,) = book(upstream).jobs.values()
    uploads = book(upstream).uploads
    assert set(uploads) == {job.training_file, job.validation_file}
    assert uploads[job.training_file] == (data / "train.jsonl").read_bytes()
    assert job.validation_file is not None
    assert uploads[job.validation_file] == (data / "validation.jsonl").read_bytes()
    assert (job.model, job.suffix, job.looks) == (BASE, "tickets", 5)  # 2 validating, 2 running, then done
    assert result == {
        "job_id": job.id,
        "status": "succeeded",
        "base_model": "mini",
        "fine_tuned_model": f"ft:{BASE}:gateway-fake:tickets:{job.id.removeprefix('ftjob-')}",
        "trained_tokens": len(uploads[job.training_file].split()) * 3,
    }
    assert json.loads(json.dumps(result)) == result


def test_a_collection_without_validation_examples_uploads_the_training_file_only(
    upstream: FakeServer, tmp_path: Path
) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    job_id = tuner(upstream).submit(data, BASE, None)
    job = book(upstream).jobs[job_id]
    assert job.validation_file is None and list(book(upstream).uploads) == [job.training_file]
    done = wait(tuner(upstream), job_id, poll_s=0.0, timeout_s=30)
    assert done.fine_tuned_model == f"ft:{BASE}:gateway-fake::{job_id.removeprefix('ftjob-')}"


# --------------------------------------------------------------------------- refused before upload


@pytest.mark.parametrize(
    ("train", "validation", "said"),
    [
        ([chat(i) for i in range(9)], None, "train.jsonl has 9 examples; fine-tuning needs at least 10"),
        (
            [chat(i) for i in range(11)] + [{"messages": chat(0)["messages"][:2]}],
            None,
            "train.jsonl line 12: the last message is 'user''s, not the assistant's answer",
        ),
        (
            [chat(i) for i in range(10)],
            [{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}],
            "validation.jsonl line 1: message 1 has role 'bot'",
        ),
        (["{not json"] + [chat(i) for i in range(10)], None, "train.jsonl line 1: not a JSON object"),
        ([{"prompt": "a", "completion": "b"}] * 10, None, "(10 of 10 lines refused)"),
        ([chat(i, answer="") for i in range(5)] + [{"messages": [{"role": "user"}]}] * 5, None, "line 6: message 1"),
    ],
)
def test_a_collection_openai_would_refuse_is_refused_before_any_upload(
    upstream: FakeServer, tmp_path: Path, train: list[Any], validation: list[Any] | None, said: str
) -> None:
    data = collection(tmp_path / "data", train, validation)
    with pytest.raises(FineTuningRefused) as refused:
        tuner(upstream).submit(data, BASE, "x")
    assert said in str(refused.value)
    assert book(upstream).uploads == {} and book(upstream).jobs == {}


def test_files_over_the_size_bound_a_missing_collection_and_a_long_suffix_are_refused(
    upstream: FakeServer, tmp_path: Path
) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    size = (data / "train.jsonl").stat().st_size
    with pytest.raises(FineTuningRefused, match=f"train.jsonl is {size} bytes, over the 1000-byte limit"):
        tuner(upstream, max_file_bytes=1000).submit(data, BASE, None)
    with pytest.raises(FineTuningRefused, match="does not exist"):
        tuner(upstream).submit(tmp_path / "nowhere", BASE, None)
    with pytest.raises(FineTuningRefused, match="1 to 64 characters"):
        tuner(upstream).submit(data, BASE, "s" * 65)
    assert book(upstream).uploads == {}


# --------------------------------------------------------------------------- the job or the API fails


def test_a_job_the_provider_fails_ends_as_fine_tuning_failed_with_its_message(
    upstream: FakeServer, tmp_path: Path
) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    book(upstream).fail_with = "The job failed due to an internal error."
    with pytest.raises(FineTuningFailed) as failed:
        submit_and_wait(gateway_config(upstream.base_url), data, "mini", None, poll_s=0.0, timeout_s=30)
    (job_id,) = book(upstream).jobs
    assert str(failed.value) == f"fine-tuning job {job_id} failed: The job failed due to an internal error."


def test_the_fake_checks_files_as_openai_does_and_the_adapter_reports_its_refusal(upstream: FakeServer) -> None:
    # Given a file that is not chat JSONL, uploaded past the adapter's own checks
    client = openai.OpenAI(api_key=KEY, base_url=upstream.base_url, max_retries=0)
    bad = client.files.create(file=("train.jsonl", b'{"prompt": "a", "completion": "b"}\n' * 10), purpose="fine-tune")
    created = client.fine_tuning.jobs.create(model=BASE, training_file=bad.id)
    assert created.status == "validating_files"

    # Then the job fails while its files are validated, with OpenAI's error object and event
    with pytest.raises(
        FineTuningFailed, match=r"failed: The job failed due to an invalid training file\. Invalid file"
    ):
        wait(tuner(upstream), created.id, poll_s=0.0, timeout_s=30)
    job = client.fine_tuning.jobs.retrieve(created.id)
    assert job.error is not None and (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert job.fine_tuned_model is None
    events = client.fine_tuning.jobs.list_events(created.id).data
    assert events[0].level == "error" and "missing the `messages` key" in events[0].message

    # And an unknown file is a 404 in OpenAI's error format
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(model=BASE, training_file="file-nope")
    assert missing.value.body == {
        "message": "No such File object: file-nope",
        "type": "invalid_request_error",
        "param": "training_file",
        "code": "file_not_found",
    }

    # And a batch file still goes to the batch API's store, not to fine-tuning's
    batch_file = client.files.create(file=("batch.jsonl", b"{}\n"), purpose="batch")
    assert upstream.script.batches.files == {batch_file.id: b"{}\n"}
    assert list(book(upstream).uploads) == [bad.id]


def test_a_server_error_on_create_is_retried_by_the_sdk(upstream: FakeServer, tmp_path: Path) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    upstream.script.push(status(500, retry_after=0.01))
    result = submit_and_wait(gateway_config(upstream.base_url), data, "mini", None, poll_s=0.0, timeout_s=30)
    assert result["status"] == "succeeded"
    assert upstream.script.pending == 0 and len(book(upstream).jobs) == 1


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        ([status(429, retry_after=0.01, message=f"Rate limit reached for {KEY}")] * 3, "HTTP 429: Rate limit reached"),
        ([status(401, message=f"Incorrect API key provided: {KEY}.")], "HTTP 401: Incorrect API key provided: ***."),
    ],
)
def test_an_api_error_ends_as_fine_tuning_failed_with_the_providers_words_and_no_key(
    upstream: FakeServer, tmp_path: Path, answers: list[Any], said: str
) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    upstream.script.push(*answers)
    with pytest.raises(FineTuningFailed) as failed:
        submit_and_wait(gateway_config(upstream.base_url), data, "mini", None, poll_s=0.0, timeout_s=30)
    message = str(failed.value)
    assert message.startswith("OpenAI fine-tuning, submitting the job: ") and said in message
    assert KEY not in message and "Traceback" not in message
    assert upstream.script.pending == 0 and book(upstream).jobs == {}  # the SDK tried every answer: 3 for 429


def test_an_unreachable_api_ends_as_fine_tuning_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FT_KEY", KEY)
    with fake_server("openai") as gone:
        url = gone.base_url
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    model = gateway_config(url).models["mini"]
    with pytest.raises(FineTuningFailed, match=f"could not reach {url}"):
        OpenAIFineTuning("mini", model, max_retries=0, timeout_s=2).submit(data, BASE, None)


def test_an_api_that_does_not_answer_in_time_ends_as_fine_tuning_failed(upstream: FakeServer, tmp_path: Path) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    upstream.script.push(delay(1.0))
    with pytest.raises(FineTuningFailed, match=f"submitting the job: {upstream.base_url}/ did not answer in time"):
        tuner(upstream, timeout_s=0.2, max_retries=0).submit(data, BASE, None)


def test_a_cancelled_job_ends_the_wait_and_a_finished_one_cannot_be_cancelled(
    upstream: FakeServer, tmp_path: Path
) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    adapter = tuner(upstream)
    job_id = adapter.submit(data, BASE, "c")
    assert adapter.cancel(job_id).status == "cancelled"
    with pytest.raises(FineTuningFailed, match=f"fine-tuning job {job_id} cancelled"):
        wait(adapter, job_id, poll_s=0.0, timeout_s=30)

    done = wait(adapter, adapter.submit(data, BASE, "d"), poll_s=0.0, timeout_s=30)
    with pytest.raises(FineTuningFailed, match=r"HTTP 400: Job ftjob-\d+ has already completed"):
        adapter.cancel(done.id)


# --------------------------------------------------------------------------- waiting


class StuckTuner:
    """A provider whose job never leaves `running`; the clock moves only when the wait sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.looks = 0

    def submit(self, data: Path, base_model: str, suffix: str | None) -> str:
        return "ftjob-stuck"

    def status(self, job_id: str) -> FineTuneJob:
        self.looks += 1
        return FineTuneJob(job_id, "running")

    def cancel(self, job_id: str) -> FineTuneJob:
        return FineTuneJob(job_id, "cancelled")

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_job_still_running_at_the_deadline_ends_the_wait_naming_it() -> None:
    stuck = StuckTuner()
    with pytest.raises(FineTuningFailed) as late:
        wait(stuck, "ftjob-stuck", poll_s=30, timeout_s=100, sleep=stuck.sleep, clock=stuck.clock)
    assert "fine-tuning job ftjob-stuck is still running after 100 s" in str(late.value)
    assert stuck.now == 200.0 and stuck.looks == 5  # looked at 0, 30, 60, 90 and 100 s; slept 10 s last


def test_the_wait_sleeps_poll_s_between_looks(upstream: FakeServer, tmp_path: Path) -> None:
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    book(upstream).looks_per_stage = 3
    adapter = tuner(upstream)
    slept = RecordingSleep()
    job = wait(adapter, adapter.submit(data, BASE, None), poll_s=15, timeout_s=3600, sleep=slept)
    assert job.status == "succeeded" and slept.delays == [15] * 6


# --------------------------------------------------------------------------- the configuration


def test_only_an_openai_chat_model_of_the_configuration_can_be_fine_tuned(
    upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = gateway_config(upstream.base_url)
    data = collection(tmp_path / "data", [chat(i) for i in range(10)])
    with pytest.raises(
        ConfigError, match="model 'claude' is a chat model of anthropic; fine-tuning jobs need an openai"
    ):
        submit_and_wait(config, data, "claude", None, poll_s=0.0, timeout_s=30)
    with pytest.raises(ConfigError, match="no model 'gpt-5' in the configuration"):
        submit_and_wait(config, data, "gpt-5", None, poll_s=0.0, timeout_s=30)
    monkeypatch.delenv("FAKE_FT_KEY")
    with pytest.raises(ConfigError, match=r"model 'mini' has no API key \(set FAKE_FT_KEY\)"):
        submit_and_wait(config, data, "mini", None, poll_s=0.0, timeout_s=30)
    assert book(upstream).uploads == {}


def test_the_fine_tuned_model_is_registered_as_a_pinned_candidate_on_its_base_models_account() -> None:
    config = gateway_config("http://127.0.0.1:9/v1")
    base = config.models["mini"]
    name = f"ft:{BASE}:gateway-fake:tickets:7"

    student = registered_model(base, name)

    assert ModelConfig.model_validate(student.model_dump()) == student
    assert (student.provider, student.base_url, student.api_key_env) == ("openai", base.base_url, "FAKE_FT_KEY")
    assert (student.provider_model, student.lifecycle, student.allows_training) == (name, "candidate", False)
    assert student.price == base.price and student.retires_on is None
    # it enters the configuration beside its base model, the registry's checks passing
    models = {**{k: v.model_dump() for k, v in config.models.items()}, "student": student.model_dump()}
    tenants = {k: v.model_dump() for k, v in config.tenants.items()}
    assert GatewayConfig.model_validate({"models": models, "tenants": tenants}).models["student"] == student
    dearer = Price(input_per_mtok=0.3, output_per_mtok=1.2)
    assert registered_model(base, name, price=dearer).price == dearer
