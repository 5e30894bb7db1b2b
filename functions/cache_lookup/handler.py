from llm_gateway.aws.handler import step_handler
from llm_gateway.cache.step import cache_lookup_step

lambda_handler = step_handler(cache_lookup_step, "cache_lookup")
