from llm_gateway.invoke import invoke_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(invoke_step, "invoke")
