"""Fine-tuning at a provider (docs/distillation.md, step 3): a collection's `train.jsonl` and
`validation.jsonl` uploaded to OpenAI's fine-tuning jobs API, the job polled to its end, and the
resulting `ft:...` model written as a pinned candidate of the configuration.

`FineTuner` is the port; `OpenAIFineTuning` its adapter on the `openai` SDK. The files are checked
first as OpenAI would check them, so a collection it would refuse is refused here, before any upload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import openai
from openai.types.fine_tuning import FineTuningJob

from ..config import GatewayConfig, ModelConfig, Price
from ..errors import ConfigError, ProviderUnavailable
from ..providers.base import SdkClients

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})

MIN_TRAINING_EXAMPLES: Final = 10  # OpenAI refuses a training file with fewer
MAX_FILE_BYTES: Final = 512 * 1024 * 1024  # the Files API's limit on one upload
MAX_SUFFIX_CHARS: Final = 64
ROLES: Final = ("system", "user", "assistant")
REQUEST_TIMEOUT_S: Final = 120.0  # one API call, an upload included
MAX_RETRIES: Final = 2  # the SDK's retries of a timeout, 408/409/429 or 5xx


class FineTuningRefused(ValueError):
    """The data or the request is one the provider would refuse: nothing was submitted."""


class FineTuningFailed(RuntimeError):
    """The provider's API failed, or the job ended without a model; the message is the provider's."""


@dataclass(frozen=True)
class FineTuneJob:
    """A provider's fine-tuning job as last seen."""

    id: str
    status: JobStatus
    fine_tuned_model: str | None = None
    error: str | None = None
    trained_tokens: int | None = None


class FineTuner(Protocol):
    """Fine-tuning jobs at a provider."""

    def submit(self, data: Path, base_model: str, suffix: str | None) -> str:
        """Upload the collection in `data` and start a job on `base_model`; the job's id."""
        ...

    def status(self, job_id: str) -> FineTuneJob: ...

    def cancel(self, job_id: str) -> FineTuneJob: ...


# --------------------------------------------------------------------------- checks before upload


def _is_conversation(example: Any) -> str | None:
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list) or not example["messages"]:
        return "not a JSON object with a non-empty `messages` list"
    return None


def _messages_have_text(example: dict[str, Any]) -> str | None:
    for number, message in enumerate(example["messages"], 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return f"message {number} is not an object with a text `content`"
    return None


def _roles_known(example: dict[str, Any]) -> str | None:
    for number, message in enumerate(example["messages"], 1):
        if message.get("role") not in ROLES:
            return f"message {number} has role {message.get('role')!r} (not {', '.join(ROLES)})"
    return None


def _ends_with_answer(example: dict[str, Any]) -> str | None:
    last = example["messages"][-1].get("role")
    return None if last == "assistant" else f"the last message is {last!r}'s, not the assistant's answer"


EXAMPLE_CHECKS: Final[tuple[Callable[[Any], str | None], ...]] = (
    _is_conversation,
    _messages_have_text,
    _roles_known,
    _ends_with_answer,
)


def _examples(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and JSON value (None when it is not JSON)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if raw.strip():
                try:
                    yield number, json.loads(raw)
                except ValueError:  # not JSON, or not UTF-8
                    yield number, None


def check_split(path: Path, minimum: int, max_bytes: int = MAX_FILE_BYTES) -> int:
    """The number of examples in a split file OpenAI would accept; FineTuningRefused naming the
    file, the first bad line and why, when it would refuse it."""
    if not path.is_file():
        raise FineTuningRefused(f"{path} does not exist (write the collection with `llm-gateway distill collect`)")
    size = path.stat().st_size
    if size > max_bytes:
        raise FineTuningRefused(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit of one upload")
    count, bad, first = 0, 0, ""
    for number, example in _examples(path):
        count += 1
        problem = next((p for check in EXAMPLE_CHECKS if (p := check(example)) is not None), None)
        if problem is not None:
            bad += 1
            first = first or f"line {number}: {problem}"
    if bad:
        raise FineTuningRefused(f"{path.name} {first} ({bad} of {count} lines refused)")
    if count < minimum:
        raise FineTuningRefused(f"{path.name} has {count} examples; fine-tuning needs at least {minimum}")
    return count


def check_collection(data: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[Path, Path | None]:
    """The training file and, when it has examples, the validation file of a collection, each
    checked with `check_split`."""
    train, validation = data / "train.jsonl", data / "validation.jsonl"
    check_split(train, MIN_TRAINING_EXAMPLES, max_bytes)
    has_validation = validation.is_file() and check_split(validation, 0, max_bytes) > 0
    return train, validation if has_validation else None


def _check_suffix(suffix: str | None) -> None:
    if suffix is not None and not 0 < len(suffix) <= MAX_SUFFIX_CHARS:
        raise FineTuningRefused(f"the suffix must have 1 to {MAX_SUFFIX_CHARS} characters")


# --------------------------------------------------------------------------- the OpenAI adapter


class OpenAIFineTuning:
    """OpenAI's fine-tuning jobs API (or a server speaking it) for the account of a configured
    `openai` model: its `base_url`, and the key in its `api_key_env` (else `OPENAI_API_KEY`)."""

    def __init__(
        self,
        model_id: str,
        model: ModelConfig,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_retries: int = MAX_RETRIES,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if model.provider != "openai":
            raise ConfigError(f"model '{model_id}' is served by {model.provider}; fine-tuning jobs need openai")
        clients = SdkClients(
            "OPENAI_API_KEY",
            lambda key, base_url: openai.OpenAI(
                api_key=key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
            ),
        )
        try:
            self._client = clients.get(model_id, model)
        except ProviderUnavailable as exc:
            raise ConfigError(exc.message) from None
        self._max_file_bytes = max_file_bytes

    def submit(self, data: Path, base_model: str, suffix: str | None) -> str:
        train, validation = check_collection(data, self._max_file_bytes)
        _check_suffix(suffix)
        with self._calls("submitting the job"):
            training_file = self._client.files.create(file=train, purpose="fine-tune").id
            validation_file = self._client.files.create(file=validation, purpose="fine-tune").id if validation else None
            job = self._client.fine_tuning.jobs.create(
                model=base_model, training_file=training_file, validation_file=validation_file, suffix=suffix
            )
        return job.id

    def status(self, job_id: str) -> FineTuneJob:
        with self._calls(f"looking at job {job_id}"):
            return _job(self._client.fine_tuning.jobs.retrieve(job_id))

    def cancel(self, job_id: str) -> FineTuneJob:
        with self._calls(f"cancelling job {job_id}"):
            return _job(self._client.fine_tuning.jobs.cancel(job_id))

    def _calls(self, doing: str) -> AbstractContextManager[None]:
        return _api_failures(doing, self._client.api_key, str(self._client.base_url))


def _job(job: FineTuningJob) -> FineTuneJob:
    error = job.error.message if job.error is not None else None
    return FineTuneJob(job.id, job.status, job.fine_tuned_model, error or None, job.trained_tokens)


def _said(exc: openai.OpenAIError, base_url: str) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return f"{base_url} did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        return f"could not reach {base_url}"
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        return f"HTTP {exc.status_code}: {body.get('message') or exc.response.text[:300]}"
    return type(exc).__name__


@contextmanager
def _api_failures(doing: str, api_key: str, base_url: str) -> Iterator[None]:
    """The SDK's errors inside the block as FineTuningFailed with the provider's message, the API
    key scrubbed from it."""
    try:
        yield
    except openai.OpenAIError as exc:
        message = f"OpenAI fine-tuning, {doing}: {_said(exc, base_url)}".replace(api_key, "***")
        raise FineTuningFailed(message) from exc


# --------------------------------------------------------------------------- waiting and the result


def wait(
    tuner: FineTuner,
    job_id: str,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FineTuneJob:
    """Look at the job every `poll_s` until it ends; the succeeded job, with its model. FineTuningFailed
    when it failed or was cancelled (with the provider's reason), succeeded without naming a model,
    or is still going after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        job = tuner.status(job_id)
        if job.status == "succeeded" and not job.fine_tuned_model:
            raise FineTuningFailed(f"fine-tuning job {job_id} succeeded, but the provider names no fine-tuned model")
        if job.status == "succeeded":
            return job
        if job.status in TERMINAL:
            raise FineTuningFailed(f"fine-tuning job {job_id} {job.status}: {job.error or 'no reason given'}")
        left = deadline - clock()
        if left <= 0:
            raise FineTuningFailed(
                f"fine-tuning job {job_id} is still {job.status} after {timeout_s:g} s "
                "(it goes on at the provider: wait again later, or cancel it)"
            )
        sleep(min(poll_s, left))


def _openai_model(config: GatewayConfig, model_id: str) -> ModelConfig:
    model = config.models.get(model_id)
    if model is None:
        raise ConfigError(f"no model '{model_id}' in the configuration")
    if model.provider != "openai" or model.kind != "chat":
        raise ConfigError(
            f"model '{model_id}' is a {model.kind} model of {model.provider}; "
            "fine-tuning jobs need an openai chat model"
        )
    return model


def submit_and_wait(
    config: GatewayConfig, data: Path, base_model_name: str, suffix: str | None, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    """Fine-tune the configuration's openai model `base_model_name` on the collection in `data`
    and wait for the job: its id, status, fine-tuned model and trained tokens, as JSON."""
    model = _openai_model(config, base_model_name)
    tuner = OpenAIFineTuning(base_model_name, model)
    job_id = tuner.submit(data, model.provider_model or base_model_name, suffix)
    job = wait(tuner, job_id, poll_s, timeout_s)
    return {
        "job_id": job.id,
        "status": job.status,
        "base_model": base_model_name,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
    }


def registered_model(config_model: ModelConfig, fine_tuned_model: str, price: Price | None = None) -> ModelConfig:
    """The configuration entry of a fine-tuned model: its base model's account and price (unless
    `price` is given), pinned to `fine_tuned_model`, a `candidate` for a staged rollout, and not a
    teacher (`allows_training: false`)."""
    fields = config_model.model_dump(exclude={"retires_on", "allow_unpinned"})
    fields.update(
        provider_model=fine_tuned_model,
        lifecycle="candidate",
        allows_training=False,
        price=(price or config_model.price).model_dump(),
    )
    return ModelConfig.model_validate(fields)
