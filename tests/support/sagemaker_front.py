"""SageMaker Runtime's InvokeEndpoint REST API in front of a model container, for boto3's client.

SageMaker itself cannot run here, so this stands in at the protocol level: boto3 signs and sends
`POST /endpoints/{name}/invocations`; the body goes to the container's `/invocations` unchanged;
a container error comes back as SageMaker reports it (`ModelError`, HTTP 424, with the
container's `OriginalStatusCode`), an unknown endpoint as a `ValidationError`.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _aws_error(status: int, error_type: str, body: dict[str, object]) -> Response:
    return JSONResponse(body, status_code=status, headers={"x-amzn-errortype": error_type})


def sagemaker_runtime_front(endpoints: dict[str, str]) -> Starlette:
    """`endpoints` maps endpoint names to container base URLs."""

    async def invoke(request: Request) -> Response:
        name = request.path_params["name"]
        container = endpoints.get(name)
        if container is None:
            return _aws_error(400, "ValidationError", {"message": f"Endpoint {name} not found."})
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                container + "/invocations",
                content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "application/json")},
            )
        if answer.status_code != 200:
            return _aws_error(
                424,
                "ModelError",
                {
                    "message": "Received client error from primary container",
                    "OriginalStatusCode": answer.status_code,
                    "OriginalMessage": answer.text,
                },
            )
        return Response(
            answer.content,
            headers={
                "content-type": answer.headers.get("content-type", "application/json"),
                "x-amzn-invoked-production-variant": "AllTraffic",
            },
        )

    return Starlette(routes=[Route("/endpoints/{name}/invocations", invoke, methods=["POST"])])
