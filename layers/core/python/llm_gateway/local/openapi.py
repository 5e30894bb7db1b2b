"""The OpenAPI document of the gateway's HTTP API, generated from the contracts."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from ..contracts import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorBody

_REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (ChatCompletion, "serialization"),
            (ChatCompletionChunk, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template=_REF,
    )
    decision_headers = {
        name: {"schema": {"type": "string"}, "description": text}
        for name, text in {
            "x-request-id": "Gateway request id (also in the audit log).",
            "x-gateway-model": "The pinned model version that answered.",
            "x-gateway-cache": "exact, semantic or miss.",
            "x-gateway-cache-score": "semantic hits: the verifier's calibrated P(same meaning) of the served answer.",
            "x-gateway-route": "The route the request's model resolved through.",
            "x-gateway-complexity": "routes with complexity routing: the request's score (P(needs the large model)).",
            "x-gateway-groundedness": "requests with `context`: the share of the answer's claims the context supports.",
        }.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway", "version": "0.1.0"},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "Create a chat completion (JSON, or SSE when stream is true).",
                    "parameters": [
                        {
                            "name": "cache-control",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "no-cache skips the cache lookup; no-store skips lookup and store.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": _REF.format(model="ChatCompletionRequest")}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The completion, or a text/event-stream of chunks ending in [DONE].",
                            "headers": decision_headers,
                            "content": {
                                "application/json": {"schema": {"$ref": _REF.format(model="ChatCompletion")}},
                                "text/event-stream": {"schema": {"$ref": _REF.format(model="ChatCompletionChunk")}},
                            },
                        },
                        "400": _error("Invalid request, or refused by a guardrail (type guardrail)."),
                        "401": _error("Unknown API key."),
                        "404": _error("Unknown model or route."),
                        "413": _error("Request body over the limit."),
                        "429": _error("Rate limit reached; see Retry-After."),
                        "502": _error("The model provider failed."),
                        "503": _error("No candidate model could answer."),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Routes and models the key may use.",
                    "responses": {
                        "200": {"description": "A list of models."},
                        "401": _error("Unknown API key."),
                    },
                }
            },
            "/v1/batches": {
                "get": {
                    "summary": "The key's tenant's batch jobs (OpenAI batch objects), newest first.",
                    "responses": {"200": {"description": "A list of batches."}, "401": _error("Unknown API key.")},
                }
            },
            "/v1/batches/{batch_id}": {
                "get": {
                    "summary": "One batch job: status, request counts, output and error files.",
                    "parameters": [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The batch."},
                        "401": _error("Unknown API key."),
                        "404": _error("No such batch for this tenant."),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness.", "security": [], "responses": {"200": {"description": "ok"}}}},
        },
    }
