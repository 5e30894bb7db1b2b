from llm_gateway.aws.handler import step_handler
from llm_gateway.guard.step import guard_step

lambda_handler = step_handler(guard_step, "guard")
