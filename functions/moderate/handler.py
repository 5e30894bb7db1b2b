from llm_gateway.aws.handler import step_handler
from llm_gateway.moderation.step import moderate_step

lambda_handler = step_handler(moderate_step, "moderate")
