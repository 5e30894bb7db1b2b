from llm_gateway.aws.rollout_gates import lambda_handler

__all__ = ["lambda_handler"]
