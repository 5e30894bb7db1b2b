from llm_gateway.aws.shadow import lambda_handler

__all__ = ["lambda_handler"]
