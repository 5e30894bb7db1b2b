from llm_gateway.aws.batch_status import lambda_handler

__all__ = ["lambda_handler"]
