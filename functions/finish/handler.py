from llm_gateway.aws.handler import step_handler
from llm_gateway.finish import finish_step

lambda_handler = step_handler(finish_step, "finish")
