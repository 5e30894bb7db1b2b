"""A thin HTTP front doing what the REST API's integrations do, on moto.

API Gateway is not served by moto, so this plays its part for the deployed stack: the TOKEN
authorizer Lambda turns the bearer key into a digest, the body is validated against the API's
request model (JSON schema from the template), the execution input is built as the request
mapping template builds it, and the output's `finish` becomes the status and body as the
response mapping does. moto lacks StartSyncExecution, so the front starts a named execution and
polls DescribeExecution.

Methods with a Lambda proxy integration (`proxy_routes`: read from the template, so a route the
stack does not define is not served) are answered as API Gateway does: the same authorizer, its
context in the event's `requestContext.authorizer`, the function's `statusCode`, `headers` and
`body` as the answer (502 when the function fails).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import jsonschema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.infrastructure.cfn import api_methods
from tests.support.local_aws import LocalAws

EXECUTION_TIMEOUT_S = 120.0
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:local/dev/{method}{path}"


def _openai_error(status: int, message: str, type_: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def proxy_routes(template: dict[str, Any], resources: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """(HTTP method, REST path) -> the deployed function's name, for each method of the template
    with a Lambda proxy integration."""
    routes = {}
    for route, method in api_methods(template).items():
        integration = method.get("Integration", {})
        if integration.get("Type") != "AWS_PROXY":
            continue
        (function_id,) = [part["Fn::GetAtt"][0] for part in integration["Uri"]["Fn::Join"][1] if isinstance(part, dict)]
        routes[route] = resources[function_id]
    return routes


class RestFront:
    """Maps `POST /v1/chat/completions` onto the state machine, and the proxy routes onto their
    functions, like the deployed REST API."""

    def __init__(
        self,
        aws: LocalAws,
        state_machine_arn: str,
        authorizer_function: str,
        request_schema: dict[str, Any],
        proxies: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.aws = aws
        self.state_machine_arn = state_machine_arn
        self.authorizer_function = authorizer_function
        self.validator = jsonschema.Draft4Validator(request_schema)
        self.proxies = dict(proxies or {})
        self.sfn = aws.client("stepfunctions")
        self.lambda_ = aws.client("lambda")
        self.executions: list[str] = []

    def authorizer_context(
        self, authorization: str | None, method: str = "POST", path: str = "/v1/chat/completions"
    ) -> dict[str, Any] | None:
        """What API Gateway puts in `requestContext.authorizer` (None: the authorizer refused)."""
        event = {
            "type": "TOKEN",
            "authorizationToken": authorization or "",
            "methodArn": METHOD_ARN.format(method=method, path=path),
        }
        answer = self.lambda_.invoke(FunctionName=self.authorizer_function, Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read())
        if answer.get("FunctionError"):
            return None
        return {"principalId": payload["principalId"], **payload["context"]}

    def authorize(self, authorization: str | None) -> str | None:
        context = self.authorizer_context(authorization)
        return None if context is None else str(context["api_key_sha256"])

    def execute(self, execution_input: dict[str, Any]) -> dict[str, Any]:
        name = execution_input["request_id"]
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(execution_input)
        )["executionArn"]
        self.executions.append(arn)
        deadline = time.monotonic() + EXECUTION_TIMEOUT_S
        while time.monotonic() < deadline:
            described: dict[str, Any] = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        return {"status": "TIMED_OUT"}

    async def chat_completions(self, request: Request) -> Response:
        digest = await anyio.to_thread.run_sync(self.authorize, request.headers.get("authorization"))
        if digest is None:
            return _openai_error(401, "Unauthorized", "authentication_error", "invalid_api_key")
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return _openai_error(400, "Invalid request body", "invalid_request_error", "invalid_json")
        problem = next(iter(self.validator.iter_errors(body)), None)
        if problem is not None:
            return _openai_error(400, "Invalid request body", "invalid_request_error", "invalid_value")
        execution_input = {
            "request_id": uuid.uuid4().hex,
            "received_at": time.time(),
            "request": body,
            "caller": {
                "api_key_sha256": digest,
                "client_ip": request.client.host if request.client else None,
                "cache_control": request.headers.get("cache-control"),
                "body_bytes": len(raw),
            },
        }
        described = await anyio.to_thread.run_sync(self.execute, execution_input)
        if described["status"] != "SUCCEEDED":
            return _openai_error(500, "The gateway failed to process the request.", "api_error")
        output = json.loads(described["output"])
        finish, answer = output["finish"], output["http"]
        cache = output.get("cache") or {}
        headers = {
            "x-request-id": execution_input["request_id"],
            "x-gateway-cache": cache.get("status") if cache.get("status") in ("exact", "semantic") else "miss",
            "x-gateway-execution": described["executionArn"],
        }
        if answer.get("retry_after_s") is not None:
            headers["retry-after"] = str(max(1, int(answer["retry_after_s"] + 0.999)))
        if cache.get("status") == "semantic":
            headers["x-gateway-cache-score"] = str(cache["score"])
        if finish.get("response") is not None:
            headers["x-gateway-model"] = finish["response"]["model"]
        if answer["status"] == 200 and (output.get("router") or {}).get("variant"):
            headers["x-gateway-variant"] = output["router"]["variant"]  # the response template's rule
        # `http.body` is the answer as JSON text, exactly what the response mapping template prints.
        return Response(answer["body"], status_code=answer["status"], headers=headers, media_type="application/json")

    def proxy(self, route: str, request: Request) -> Response:
        """A Lambda proxy integration: the REST v1 proxy event in, the function's answer out."""
        method = request.method
        context = self.authorizer_context(request.headers.get("authorization"), method, request.url.path)
        if context is None:
            return _openai_error(401, "Unauthorized", "authentication_error", "invalid_api_key")
        event = {
            "resource": route,
            "path": request.url.path,
            "httpMethod": method,
            "headers": dict(request.headers),
            "queryStringParameters": dict(request.query_params) or None,
            "pathParameters": dict(request.path_params) or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route,
                "httpMethod": method,
                "stage": "dev",
                "requestId": uuid.uuid4().hex,
                "identity": {"sourceIp": request.client.host if request.client else None},
                "authorizer": context,
            },
            "body": None,
            "isBase64Encoded": False,
        }
        answer = self.lambda_.invoke(FunctionName=self.proxies[(method, route)], Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read())
        if answer.get("FunctionError"):
            return JSONResponse({"message": "Internal server error"}, status_code=502)
        return Response(payload.get("body") or "", status_code=payload["statusCode"], headers=payload.get("headers"))

    def _endpoint(self, route: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await anyio.to_thread.run_sync(self.proxy, route, request)

        return endpoint

    def app(self) -> Starlette:
        methods: dict[str, list[str]] = {}
        for method, path in self.proxies:
            methods.setdefault(path, []).append(method)
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                *(Route(path, self._endpoint(path), methods=verbs) for path, verbs in methods.items()),
            ]
        )

    def history(self, execution_arn: str) -> list[str]:
        """Names of the states an execution entered, in order."""
        events = self.sfn.get_execution_history(executionArn=execution_arn)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
