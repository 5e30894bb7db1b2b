from llm_gateway.cache import cache_lookup_step
from llm_gateway.aws.handler import step_handler

lambda_handler = step_handler(cache_lookup_step, "cache_lookup")
