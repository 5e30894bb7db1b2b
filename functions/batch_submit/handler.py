from llm_gateway.aws.batch import submit_handler as lambda_handler

__all__ = ["lambda_handler"]
