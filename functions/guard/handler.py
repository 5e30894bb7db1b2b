from llm_gateway.guard import guard_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(guard_step, "guard")
