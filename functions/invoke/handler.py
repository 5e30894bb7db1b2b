from llm_gateway.aws.handler import step_handler
from llm_gateway.invoke.step import invoke_step

lambda_handler = step_handler(invoke_step, "invoke")
