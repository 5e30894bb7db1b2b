from llm_gateway.moderation import moderate_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(moderate_step, "moderate")
