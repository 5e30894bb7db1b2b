from llm_gateway.aws.batch import work_handler as lambda_handler

__all__ = ["lambda_handler"]
