from llm_gateway.routing import route_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(route_step, "router")
