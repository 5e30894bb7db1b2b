"""The streaming path: the local ASGI app in one Lambda, behind a Function URL in RESPONSE_STREAM mode.

Step Functions cannot stream, and the Python runtime has no native response streaming, so the
function runs the app under uvicorn and AWS Lambda Web Adapter (a published layer) relays
invocations to it, streaming the response. The app authenticates callers itself, exactly as it does
locally (API keys against the tenants' digests), and runs the same step functions in-process.
"""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.functions import function_code, gateway_function
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.storage import GatewayStores


class StreamingEndpoint(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        layers: GatewayLayers,
        stores: GatewayStores,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        adapter = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "WebAdapter",
            stage.web_adapter_layer_arn or c.web_adapter_layer_arn(stage.region, stage.architecture),
        )
        self.function = gateway_function(
            self,
            "Function",
            stage=stage,
            name=c.STREAM_FOLDER,
            code=function_code(c.STREAM_FOLDER, entry=c.STREAM_HANDLER),
            handler=c.STREAM_HANDLER,
            layers=layers,
            extra_layers=[adapter],
            environment={
                **environment,
                "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
                "AWS_LWA_INVOKE_MODE": "response_stream",
                "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
                "PORT": str(c.WEB_ADAPTER_PORT),
            },
            timeout_s=c.STREAM_TIMEOUT_S,
            reserved_concurrency=stage.reserved_concurrency,
        )
        stores.grant(self.function, c.FUNCTION_ACCESS[c.STREAM_FOLDER])
        self.url = self.function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM,
        )
