from llm_gateway.aws.handler import step_handler
from llm_gateway.finish import failure_step

lambda_handler = step_handler(failure_step, "record_failure")
