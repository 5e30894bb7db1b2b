from llm_gateway.aws.distill_collect import lambda_handler

__all__ = ["lambda_handler"]
