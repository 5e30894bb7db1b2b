from llm_gateway.aws.handler import step_handler
from llm_gateway.routing.step import route_step

lambda_handler = step_handler(route_step, "router")
