"""The OpenAPI document of the gateway's HTTP API, generated from the contracts.

Every route of `app.create_app` is here with the answers it really gives: each error is an
`ErrorBody` with content type application/json. A method a path does not take is answered 405
with an `Allow` header and an `ErrorBody` (components.responses.MethodNotAllowed); an unknown path
404 with an `ErrorBody`. Response headers come from their one definition, `response_headers`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from ..cache.purge import PurgeRequest
from ..contracts import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ErrorBody,
)
from ..ports import Trace
from ..response_headers import METHOD_NOT_ALLOWED, openapi_headers

_REF = "#/components/schemas/{model}"
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}


def _ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("ErrorBody")}}}


def _json(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _list_of(model: str, **extra: Any) -> dict[str, Any]:
    return _object({"object": {"const": "list"}, "data": {"type": "array", "items": _ref(model)}, **extra})


# The answers of the routes that have no pydantic model: written as the handlers build them.
_HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "Model": _object(
        {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        }
    ),
    "ModelList": _list_of("Model"),
    "Batch": _object(
        {
            "id": {"type": "string"},
            "object": {"const": "batch"},
            "endpoint": {"const": "/v1/chat/completions"},
            "status": {"enum": ["in_progress", "completed", "failed"]},
            "input_file": {"type": "string"},
            "output_file": _NULLABLE_STRING,
            "error_file": _NULLABLE_STRING,
            "created_at": {"type": "integer"},
            "completed_at": _NULLABLE_INT,
            "errors": {
                "anyOf": [
                    {"type": "null"},
                    _object(
                        {
                            "data": {
                                "type": "array",
                                "items": _object({"code": {"type": "string"}, "message": {"type": "string"}}),
                            }
                        }
                    ),
                ]
            },
            "request_counts": _object(
                {"total": {"type": "integer"}, "completed": {"type": "integer"}, "failed": {"type": "integer"}}
            ),
        }
    ),
    "BatchList": _list_of("Batch", has_more={"type": "boolean"}),
    # One server-sent event of a stream: a chunk, the error that ends a failed stream, or [DONE].
    "MessagesEvent": {
        "type": "object",
        "description": "A Messages streaming event: message_start, content_block_start, content_block_delta, "
        "content_block_stop, message_delta, message_stop, or error.",
        "properties": {
            "event": {"type": "string"},
            "data": {"contentMediaType": "application/json", "contentSchema": {"type": "object", "required": ["type"]}},
        },
        "required": ["event", "data"],
    },
    "ResponsesEvent": {
        "type": "object",
        "description": "A Responses streaming event: response.created, response.in_progress, "
        "response.output_item.added, response.content_part.added, response.output_text.delta, "
        "response.output_text.done, response.content_part.done, response.function_call_arguments.delta, "
        "response.function_call_arguments.done, response.output_item.done, then response.completed, "
        "response.incomplete or response.failed.",
        "properties": {
            "event": {"type": "string"},
            "data": {
                "contentMediaType": "application/json",
                "contentSchema": {"type": "object", "required": ["type", "sequence_number"]},
            },
        },
        "required": ["event", "data"],
    },
    "Response": {
        "type": "object",
        "description": "A Responses API answer: id resp_<x-request-id>, status completed or incomplete, "
        "output items (message with output_text, function_call), usage.",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
            "output": {"type": "array", "items": {"type": "object"}},
            "previous_response_id": _NULLABLE_STRING,
            "store": {"type": "boolean"},
        },
        "required": ["id", "object", "status", "output"],
    },
    "FeedbackKept": _object(
        {
            "object": {"const": "feedback"},
            "request_id": {"type": "string"},
            "kind": {"enum": ["thumbs", "rating"]},
            "score": {"type": "integer"},
            "satisfaction": {"type": "number", "minimum": 0, "maximum": 1},
        }
    ),
    "ResponseDeleted": _object(
        {"id": {"type": "string"}, "object": {"const": "response.deleted"}, "deleted": {"const": True}}
    ),
    "InputItemList": _object(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
            "has_more": {"type": "boolean"},
        }
    ),
    "ChatCompletionEvent": {
        "type": "object",
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [_ref("ChatCompletionChunk"), _ref("ErrorBody")]},
                    },
                ]
            }
        },
        "required": ["data"],
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "model_endpoint": {
                "type": "object",
                "description": "The state of the (first) model endpoint this process runs.",
            },
            "model_endpoints": {
                "type": "array",
                "items": {"type": "object"},
                "description": "With more than one endpoint: each one's state and the models it serves.",
            },
        },
        "required": ["status"],
        "additionalProperties": False,
    },
    "PurgeResult": _object(
        {
            "tenant": {"type": "string"},
            "model": {"type": "string"},
            "kb_version": {"type": "string"},
            "system_prompt_tag": {"type": "string", "description": "The purged prompt's tag, never its text."},
            "removed": {"type": "integer", "minimum": 0},
        },
        required=["tenant", "removed"],
    ),
}

_UNAUTHORIZED = _error("Missing or unknown API key.")
_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ADMIN_ONLY = _error("Missing API key, or not an admin key.")


def _chat_error(status: str, description: str) -> dict[str, Any]:
    """A chat completion's error answer: an `ErrorBody` with the headers sent on that status."""
    return {**_error(description), "headers": openapi_headers(status)}


def _chat_completions() -> dict[str, Any]:
    return {
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
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}}},
        "responses": {
            "200": {
                "description": "The completion, or a text/event-stream of chunks ending in [DONE].",
                "headers": openapi_headers("200"),
                "content": {
                    "application/json": {"schema": _ref("ChatCompletion")},
                    "text/event-stream": {"schema": _ref("ChatCompletionEvent")},
                },
            },
            "400": _chat_error(
                "400",
                "Invalid request (not JSON, not an object, a field outside its schema), "
                "or refused by a guardrail (type guardrail).",
            ),
            "401": _chat_error("401", "Missing or unknown API key."),
            "404": _chat_error("404", "Unknown model or route."),
            "413": _chat_error("413", "Request body over the limit (code request_too_large)."),
            "429": _chat_error("429", "Rate limit or budget reached; see Retry-After."),
            "502": _chat_error(
                "502", "The model provider failed, or its answer did not satisfy response_format after one repair."
            ),
            "503": _chat_error("503", "No candidate model could answer."),
        },
    }


def _one_purge_selector(schema: dict[str, Any]) -> dict[str, Any]:
    """PurgeRequest's rule (at most one of model, kb_version and system_prompt), in JSON schema."""
    selectors = ("model", "kb_version", "system_prompt")
    pairs = [(a, b) for i, a in enumerate(selectors) for b in selectors[i + 1 :]]
    both = [{"required": [a, b], "properties": {a: {"type": "string"}, b: {"type": "string"}}} for a, b in pairs]
    return {**schema, "not": {"anyOf": both}}


@cache
def openapi_document() -> dict[str, Any]:
    from ..messages_api import MessagesRequest  # on first use: not every process serves the document
    from ..responses_api import ResponsesRequest
    from ..traces import FeedbackRequest

    _, schemas = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (EmbeddingRequest, "validation"),
            (MessagesRequest, "validation"),
            (ResponsesRequest, "validation"),
            (FeedbackRequest, "validation"),
            (Trace, "serialization"),
            (PurgeRequest, "validation"),
            (EmbeddingList, "serialization"),
            (ChatCompletion, "serialization"),
            (ChatCompletionChunk, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template=_REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llm-gateway",
            "version": "0.1.0",
            "description": "OpenAI-compatible chat completions. Every error is an ErrorBody (application/json); "
            "a method a path does not take is 405 with an Allow header, an unknown path 404.",
        },
        "components": {
            "schemas": {
                **schemas["$defs"],
                "PurgeRequest": _one_purge_selector(schemas["$defs"]["PurgeRequest"]),
                **_HAND_WRITTEN,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "MethodNotAllowed": {
                    "description": "The path does not take this method.",
                    "headers": openapi_headers(METHOD_NOT_ALLOWED),
                    "content": {"application/json": {"schema": _ref("ErrorBody")}},
                },
                "NotFound": _error("No such path."),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {"post": _chat_completions()},
            "/v1/messages": {
                "post": {
                    "summary": "Anthropic's Messages API over the same routes, guards and accounting.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("MessagesRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "A Message, or a text/event-stream of Messages events when stream is true.",
                            "headers": openapi_headers("200"),
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": _ref("MessagesEvent")},
                            },
                        },
                        **{
                            status: {
                                "description": "An error in Anthropic's shape: {type: error, error: {type, message}}.",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            }
                            for status in ("400", "401", "404", "413", "429", "502", "503")
                        },
                    },
                }
            },
            "/v1/responses": {
                "post": {
                    "summary": "OpenAI's Responses API over the same routes, guards and accounting; "
                    "previous_response_id continues a conversation the key's tenant stored.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ResponsesRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "A Response, or a text/event-stream of Responses events (stream: true).",
                            "headers": openapi_headers("200"),
                            "content": {
                                "application/json": {"schema": _ref("Response")},
                                "text/event-stream": {"schema": _ref("ResponsesEvent")},
                            },
                        },
                        "400": _error("Invalid request, or refused by a guardrail."),
                        "401": _UNAUTHORIZED,
                        "404": _error("Unknown route, or a previous_response_id the tenant has not stored."),
                        "413": _error("Request body over the limit."),
                        "429": _error("Rate limit or budget reached."),
                        "502": _error("The upstream model failed."),
                        "503": _error("No model of the route answered."),
                    },
                }
            },
            "/v1/responses/{response_id}": {
                "get": {
                    "summary": "A response the key's tenant stored (PII masked as stored).",
                    "parameters": [_RESPONSE_ID],
                    "responses": {
                        "200": _json("The response.", "Response"),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such response for this tenant (or it expired)."),
                    },
                },
                "delete": {
                    "summary": "Delete a stored response and every response that continues from it.",
                    "parameters": [_RESPONSE_ID],
                    "responses": {
                        "200": _json("Deleted.", "ResponseDeleted"),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such response for this tenant."),
                    },
                },
            },
            "/v1/responses/{response_id}/input_items": {
                "get": {
                    "summary": "The input items of a stored response's turn.",
                    "parameters": [_RESPONSE_ID],
                    "responses": {
                        "200": _json("The turn's input items.", "InputItemList"),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such response for this tenant (or it expired)."),
                    },
                }
            },
            "/v1/traces/{request_id}": {
                "get": {
                    "summary": "The trace of one of the key's tenant's requests: each step, what it decided, "
                    "timings, attempts, tokens, cost, feedback.",
                    "parameters": [
                        {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json("The trace.", "Trace"),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such request of this tenant (another tenant's, expired, or never traced)."),
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "A verdict on one of the tenant's answers (thumbs -1/+1 or a 1-5 rating) by its "
                    "x-request-id.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("FeedbackRequest")}},
                    },
                    "responses": {
                        "200": _json("Kept.", "FeedbackKept"),
                        "400": _error("Not a feedback body, or a score its kind does not take."),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such request of this tenant."),
                        "413": _error("Request body over the limit."),
                    },
                }
            },
            "/v1/embeddings": {
                "post": {
                    "summary": "Embed texts with the route's embedding model.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("EmbeddingRequest")}},
                    },
                    "responses": {
                        "200": _json("One embedding per input, in order.", "EmbeddingList"),
                        "400": _error("Invalid request, a chat route, or refused by a guardrail."),
                        "401": _UNAUTHORIZED,
                        "404": _error("Unknown model or route."),
                        "413": _error("Request body over the limit."),
                        "429": _error("Rate limit or budget reached."),
                        "503": _error("No embedding model of the route answered."),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Routes and models the key may use.",
                    "responses": {"200": _json("A list of models.", "ModelList"), "401": _UNAUTHORIZED},
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One of the routes and models the key may use.",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json("The model.", "Model"),
                        "401": _UNAUTHORIZED,
                        "404": _error("Not a route or model this key may use (code model_not_found)."),
                    },
                }
            },
            "/v1/batches": {
                "get": {
                    "summary": "The key's tenant's batch jobs (OpenAI batch objects), newest first.",
                    "responses": {
                        "200": _json("A list of batches.", "BatchList"),
                        "401": _UNAUTHORIZED,
                        "404": _error("This deployment runs no batch jobs."),
                    },
                }
            },
            "/v1/batches/{batch_id}": {
                "get": {
                    "summary": "One batch job: status, request counts, output and error files.",
                    "parameters": [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json("The batch.", "Batch"),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such batch for this tenant, or no batch jobs on this deployment."),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness, and the state of a model endpoint this process runs.",
                    "security": [],
                    "responses": {
                        "200": _json("ok, or degraded while some route still has a model elsewhere.", "Health"),
                        "503": _json("degraded: every route's models are on the endpoint that is down.", "Health"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text exposition of the in-process metrics (admin keys).",
                    "responses": {
                        "200": {
                            "description": "The metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _ADMIN_ONLY,
                    },
                }
            },
            "/admin/cache/purge": {
                "post": {
                    "summary": "Purge a tenant's cached answers: all, or one model's, kb_version's or system prompt's.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PurgeRequest")}},
                    },
                    "responses": {
                        "200": _json("What was purged and how many answers went.", "PurgeResult"),
                        "400": _error("Not JSON, not a purge request, or an unknown tenant."),
                        "401": _ADMIN_ONLY,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
