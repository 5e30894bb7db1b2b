"""OpenAI's fine-tuning jobs API for the fake OpenAI server, on the wire format the SDK speaks:
`POST /v1/files` with purpose `fine-tune` (the files route of `fake_batches` hands these over),
`POST /v1/fine_tuning/jobs`, `GET /v1/fine_tuning/jobs/{id}`, `POST /v1/fine_tuning/jobs/{id}/cancel`
and `GET /v1/fine_tuning/jobs/{id}/events`.

A job reports `validating_files` for its first `looks_per_stage` looks, `running` for as many
more, then `succeeded` with `fine_tuned_model` `ft:<base>:gateway-fake:<suffix>:<id>`; a job whose
training or validation file OpenAI would refuse (not chat JSONL, too few examples) ends `failed`
instead, with OpenAI's error object, as does every job while `fail_with` is set. The job-creating
request plays the server's `Script` (a `status(...)` answers it with that error). `fine_tuning_book`
gives the test what was uploaded and the jobs.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .fake_providers import Delay, Script, Status
from .fault_upstream import Fault

ORGANIZATION = "gateway-fake"
_ids = itertools.count(1)


@dataclass
class FakeJob:
    """A fine-tuning job the fake holds: what it was asked, and why it fails (None: it succeeds)."""

    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    problem: dict[str, str] | None
    created_at: int
    looks: int = 0
    cancelled: bool = False


@dataclass
class FineTuneBook:
    """What a fake server was sent: the uploaded fine-tuning files (id -> bytes), the jobs, and
    how many looks each stage of a job lasts."""

    looks_per_stage: int = 1
    fail_with: str | None = None  # jobs created meanwhile fail in training with this message
    uploads: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, job: FakeJob) -> str:
        if job.cancelled:
            return "cancelled"
        if job.looks <= self.looks_per_stage:
            return "validating_files"
        if job.problem is not None and job.problem["code"] != "training_failed":
            return "failed"
        if job.looks <= 2 * self.looks_per_stage:
            return "running"
        return "failed" if job.problem is not None else "succeeded"

    def reset(self) -> None:
        with self.lock:
            self.uploads.clear()
            self.jobs.clear()
        self.looks_per_stage, self.fail_with = 1, None


_BOOKS: weakref.WeakKeyDictionary[Script, FineTuneBook] = weakref.WeakKeyDictionary()
_BOOKS_LOCK = threading.Lock()


def fine_tuning_book(script: Script) -> FineTuneBook:
    """The fine-tuning state of the fake server playing `script`."""
    with _BOOKS_LOCK:
        return _BOOKS.setdefault(script, FineTuneBook())


def _error(code: int, message: str, error_code: str | None = None, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if code < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": error_code}}, code)


# --------------------------------------------------------------------------- OpenAI's file checks


def _line_problem(number: int, raw: str) -> str | None:
    try:
        example = json.loads(raw)
    except ValueError:
        return f"Line {number} is not valid JSON."
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not messages:
        return f"Line {number} is missing the `messages` key."
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            return f"Example {number}, message {index}: Unrecognized role."
        if not isinstance(message.get("content"), str):
            return f"Example {number}, message {index}: Missing content."
    if not any(m["role"] == "assistant" for m in messages):
        return f"Example {number}: Missing an assistant message."
    return None


def file_problem(content: bytes, minimum: int) -> str | None:
    """Why OpenAI would refuse this fine-tuning file (None: it would take it)."""
    try:
        lines = [line for line in content.decode().splitlines() if line.strip()]
    except UnicodeDecodeError:
        return "Expected file to have JSONL format with UTF-8 encoding."
    problem = next((p for n, raw in enumerate(lines, 1) if (p := _line_problem(n, raw)) is not None), None)
    if problem is not None:
        return f"Invalid file format. {problem}"
    if len(lines) < minimum:
        return f"Training file has {len(lines)} example(s), but must have at least {minimum} examples."
    return None


def _problem(book: FineTuneBook, training: bytes, validation: bytes | None) -> dict[str, str] | None:
    for param, content, minimum in (("training_file", training, 10), ("validation_file", validation, 1)):
        said = None if content is None else file_problem(content, minimum)
        if said is not None:
            kind = param.removesuffix("_file")
            return {
                "code": f"invalid_{param}",
                "param": param,
                "message": f"The job failed due to an invalid {kind} file. {said}",
            }
    if book.fail_with is not None:
        return {"code": "training_failed", "param": "", "message": book.fail_with}
    return None


# --------------------------------------------------------------------------- wire objects


def _job_object(book: FineTuneBook, job: FakeJob) -> dict[str, Any]:
    status = book.status(job)
    short = job.id.removeprefix("ftjob-")
    done = status in ("succeeded", "failed", "cancelled")
    # the training file's whitespace-separated pieces, once for each of its 3 epochs
    trained = len(book.uploads[job.training_file].split()) * 3 if status == "succeeded" else None
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.created_at + 60 if done else None,
        "fine_tuned_model": f"ft:{job.model}:{ORGANIZATION}:{job.suffix or ''}:{short}"
        if status == "succeeded"
        else None,
        "organization_id": f"org-{ORGANIZATION}",
        "result_files": [f"file-result-{short}"] if status == "succeeded" else [],
        "status": status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
        "trained_tokens": trained,
        "error": job.problem if status == "failed" else None,
        "seed": 42,
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
        "method": {"type": "supervised"},
    }


def _events(book: FineTuneBook, job: FakeJob) -> list[dict[str, Any]]:
    status = book.status(job)
    said = [("info", f"Validating training file: {job.training_file}")]
    if status in ("running", "succeeded") or (
        status == "failed" and job.problem and job.problem["code"] == "training_failed"
    ):
        said.append(("info", "Fine-tuning job started"))
    if status == "succeeded":
        said.append(("info", "The job has successfully completed"))
    elif status == "failed" and job.problem is not None:
        said.append(("error", job.problem["message"]))
    elif status == "cancelled":
        said.append(("info", "Fine-tuning job cancelled"))
    return [
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{job.id}-{n}",
            "created_at": job.created_at + n,
            "level": level,
            "message": message,
            "data": {},
            "type": "message",
        }
        for n, (level, message) in reversed(list(enumerate(said)))
    ]


# --------------------------------------------------------------------------- routes


def fine_tuning_upload(script: Script, content: bytes) -> Response:
    """Keep an uploaded fine-tuning file; the file object OpenAI answers with."""
    book = fine_tuning_book(script)
    file_id = f"file-ft{next(_ids)}"
    with book.lock:
        book.uploads[file_id] = content
    return JSONResponse(
        {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": "upload.jsonl",
            "purpose": "fine-tune",
            "status": "processed",
        }
    )


async def _played(script: Script, body: dict[str, Any]) -> Response | None:
    """The error the script's next behaviour answers the request with (None: go on)."""
    behaviour = script.next(body)
    while isinstance(behaviour, Delay):
        await anyio.sleep(behaviour.seconds)
        behaviour = behaviour.then
    if isinstance(behaviour, Status):
        headers = {} if behaviour.retry_after is None else {"retry-after": behaviour.retry_after}
        response = _error(behaviour.code, behaviour.message or f"fake OpenAI error (HTTP {behaviour.code})")
        response.headers.update(headers)
        return response
    if isinstance(behaviour, Fault):
        return _error(500, f"fault: {behaviour.kind}")
    return None


def openai_fine_tuning_routes(script: Script) -> list[Route]:
    book = fine_tuning_book(script)

    async def create(request: Request) -> Response:
        body = await request.json()
        refused = await _played(script, body)
        if refused is not None:
            return refused
        if not body.get("model") or not body.get("training_file"):
            return _error(400, "'model' and 'training_file' are required", param="model")
        if len(body.get("suffix") or "") > 64:
            return _error(400, "suffix must be at most 64 characters", param="suffix")
        with book.lock:
            files = {p: body.get(p) for p in ("training_file", "validation_file")}
            missing = next((p for p, f in files.items() if f is not None and f not in book.uploads), None)
            if missing is not None:
                return _error(404, f"No such File object: {files[missing]}", "file_not_found", missing)
            training = book.uploads[body["training_file"]]
            validation = book.uploads.get(body.get("validation_file") or "")
            job = FakeJob(
                f"ftjob-{next(_ids)}",
                body["model"],
                body["training_file"],
                body.get("validation_file"),
                body.get("suffix"),
                _problem(book, training, validation),
                int(time.time()),
            )
            book.jobs[job.id] = job
            return JSONResponse(_job_object(book, job))

    def _found(request: Request) -> FakeJob | None:
        return book.jobs.get(request.path_params["job_id"])

    async def retrieve(request: Request) -> Response:
        with book.lock:
            job = _found(request)
            if job is None:
                return _error(404, f"No such fine-tuning job: {request.path_params['job_id']}", "not_found")
            job.looks += 1
            return JSONResponse(_job_object(book, job))

    async def cancel(request: Request) -> Response:
        with book.lock:
            job = _found(request)
            if job is None:
                return _error(404, f"No such fine-tuning job: {request.path_params['job_id']}", "not_found")
            if book.status(job) in ("succeeded", "failed", "cancelled"):
                return _error(400, f"Job {job.id} has already completed.", "invalid_state")
            job.cancelled = True
            return JSONResponse(_job_object(book, job))

    async def events(request: Request) -> Response:
        with book.lock:
            job = _found(request)
            if job is None:
                return _error(404, f"No such fine-tuning job: {request.path_params['job_id']}", "not_found")
            return JSONResponse({"object": "list", "data": _events(book, job), "has_more": False})

    return [
        Route("/v1/fine_tuning/jobs", create, methods=["POST"]),
        Route("/v1/fine_tuning/jobs/{job_id}", retrieve, methods=["GET"]),
        Route("/v1/fine_tuning/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/fine_tuning/jobs/{job_id}/events", events, methods=["GET"]),
    ]
