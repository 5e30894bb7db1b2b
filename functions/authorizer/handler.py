from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.aws.authorizer import authorize
from llm_gateway.aws.observability import logger


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return authorize(event)
