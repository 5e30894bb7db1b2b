"""The providers' batch APIs for the fake servers, on the real wire formats the SDKs speak:

* OpenAI: `POST /v1/files` (multipart upload, purpose `batch`; purpose `fine-tune` goes to the
  fine-tuning routes of `fake_finetuning`), `POST /v1/batches`, `GET /v1/batches/{id}`,
  `GET /v1/batches` (list), `GET /v1/files/{id}/content`;
* Anthropic: `POST /v1/messages/batches`, `GET /v1/messages/batches/{id}`,
  `GET /v1/messages/batches/{id}/results` (JSONL).

Each request of a batch is answered by the server's `Script` (queued behaviours, then its
responder), as the online endpoint would answer it. The server's `Script.batches` (a `BatchBook`)
holds what was submitted and says how many looks a batch stays in progress.
"""

from __future__ import annotations

import itertools
import json
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .fake_finetuning import fine_tuning_upload, openai_fine_tuning_routes
from .fake_providers import (
    BatchBook,
    Delay,
    FakeBatch,
    Ok,
    Script,
    Status,
    anthropic_message,
    openai_completion,
    openai_error,
)
from .fault_upstream import Fault

_ids = itertools.count(1)


def _play(script: Script, body: dict[str, Any]) -> Ok | Status:
    behaviour = script.next(body)
    while isinstance(behaviour, Delay):  # batches have no clock to wait on
        behaviour = behaviour.then
    if isinstance(behaviour, Fault):  # a broken answer: the batch reports the line as a server error
        return Status(500, message=f"fault: {behaviour.kind}")
    return behaviour


# --------------------------------------------------------------------------- OpenAI


def _multipart(request: Request, raw: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=email_policy).parsebytes(head + raw)
    return {
        str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True) or b""
        for part in message.iter_parts()
    }


def _openai_batch(batch: FakeBatch, book: BatchBook) -> dict[str, Any]:
    done = book.ended(batch)
    failed = sum(1 for r in batch.results if r["error"] is not None or r["response"]["status_code"] != 200)
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": f"file-in-{batch.id}",
        "completion_window": "24h",
        "status": "completed" if done else "in_progress",
        "output_file_id": f"file-out-{batch.id}" if done else None,
        "error_file_id": f"file-err-{batch.id}" if done and failed else None,
        "created_at": int(time.time()),
        "request_counts": {"total": len(batch.requests), "completed": len(batch.requests) - failed, "failed": failed},
        "metadata": batch.metadata,
    }


def openai_batch_routes(script: Script) -> list[Route]:
    book = script.batches

    async def upload(request: Request) -> Response:
        fields = _multipart(request, await request.body())
        if fields.get("purpose") == b"fine-tune" and "file" in fields:
            return fine_tuning_upload(script, fields["file"])
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return openai_error(400, "purpose must be batch and a file is required")
        file_id = f"file-{next(_ids)}"
        with book.lock:
            book.files[file_id] = fields["file"]
        return JSONResponse(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(fields["file"]),
                "created_at": int(time.time()),
                "filename": "batch.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def create(request: Request) -> Response:
        body = await request.json()
        with book.lock:
            content = book.files.get(body.get("input_file_id", ""))
        if content is None or body.get("endpoint") != "/v1/chat/completions":
            return openai_error(400, "unknown input file or endpoint")
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        batch = FakeBatch(f"batch_{next(_ids)}", lines, dict(body.get("metadata") or {}))
        for line in lines:
            outcome = _play(script, line["body"])
            if isinstance(outcome, Status):
                error = {"error": {"message": outcome.message or "failed", "type": "invalid_request_error"}}
                response = {"status_code": outcome.code, "request_id": "req", "body": error}
            else:
                response = {"status_code": 200, "request_id": "req", "body": openai_completion(outcome, line["body"])}
            batch.results.append(
                {"id": f"br_{next(_ids)}", "custom_id": line["custom_id"], "response": response, "error": None}
            )
        with book.lock:
            book.batches[batch.id] = batch
        return JSONResponse(_openai_batch(batch, book))

    async def retrieve(request: Request) -> Response:
        batch = book.look(request.path_params["batch_id"])
        if batch is None:
            return openai_error(404, "no such batch")
        return JSONResponse(_openai_batch(batch, book))

    async def listing(request: Request) -> Response:
        with book.lock:
            batches = list(book.batches.values())
        data = [_openai_batch(b, book) for b in reversed(batches)]
        return JSONResponse({"object": "list", "data": data, "first_id": None, "last_id": None, "has_more": False})

    async def content(request: Request) -> Response:
        kind, _, batch_id = request.path_params["file_id"].removeprefix("file-").partition("-")
        with book.lock:
            batch = book.batches.get(batch_id)
        if batch is None or kind not in ("out", "err"):
            return openai_error(404, "no such file")
        ok = kind == "out"
        rows = [r for r in batch.results if (r["response"]["status_code"] == 200) == ok]
        return Response("".join(json.dumps(r) + "\n" for r in rows), media_type="application/octet-stream")

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
        Route("/v1/batches", create, methods=["POST"]),
        Route("/v1/batches", listing, methods=["GET"]),
        Route("/v1/batches/{batch_id}", retrieve, methods=["GET"]),
        *openai_fine_tuning_routes(script),
    ]


# --------------------------------------------------------------------------- Anthropic


def _anthropic_batch(batch: FakeBatch, book: BatchBook, base_url: str) -> dict[str, Any]:
    done = book.ended(batch)
    errored = sum(1 for r in batch.results if r["result"]["type"] != "succeeded")
    now = "2026-11-28T00:00:00Z"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": "ended" if done else "in_progress",
        "request_counts": {
            "processing": 0 if done else len(batch.requests),
            "succeeded": len(batch.requests) - errored if done else 0,
            "errored": errored if done else 0,
            "canceled": 0,
            "expired": 0,
        },
        "ended_at": now if done else None,
        "created_at": now,
        "expires_at": "2026-11-29T00:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if done else None,
    }


def anthropic_batch_routes(script: Script) -> list[Route]:
    book = script.batches

    async def create(request: Request) -> Response:
        body = await request.json()
        batch = FakeBatch(f"msgbatch_{next(_ids)}", list(body.get("requests") or []), {})
        for item in batch.requests:
            outcome = _play(script, item["params"])
            if isinstance(outcome, Status):
                error = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": outcome.message or "failed"},
                }
                result: dict[str, Any] = {"type": "errored", "error": error}
            else:
                result = {"type": "succeeded", "message": anthropic_message(outcome, item["params"]["model"])}
            batch.results.append({"custom_id": item["custom_id"], "result": result})
        with book.lock:
            book.batches[batch.id] = batch
        return JSONResponse(_anthropic_batch(batch, book, str(request.base_url).rstrip("/")))

    async def retrieve(request: Request) -> Response:
        batch = book.look(request.path_params["batch_id"])
        if batch is None:
            return JSONResponse({"type": "error", "error": {"type": "not_found_error", "message": "no batch"}}, 404)
        return JSONResponse(_anthropic_batch(batch, book, str(request.base_url).rstrip("/")))

    async def results(request: Request) -> Response:
        with book.lock:
            batch = book.batches.get(request.path_params["batch_id"])
        if batch is None or not book.ended(batch):
            return JSONResponse({"type": "error", "error": {"type": "not_found_error", "message": "no results"}}, 404)
        lines = "".join(json.dumps(r) + "\n" for r in batch.results)
        return Response(lines, media_type="application/x-jsonl")

    return [
        Route("/v1/messages/batches", create, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
    ]
