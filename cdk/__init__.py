"""The AWS CDK app of llm-gateway."""
