from llm_gateway.aws.distill_evaluate import lambda_handler

__all__ = ["lambda_handler"]
