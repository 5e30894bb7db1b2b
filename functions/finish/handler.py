from llm_gateway.finish import finish_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(finish_step, "finish")
