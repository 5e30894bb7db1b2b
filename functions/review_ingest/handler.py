from llm_gateway.aws.review_ingest import lambda_handler

__all__ = ["lambda_handler"]
