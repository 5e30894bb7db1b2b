"""The self-hosted model endpoint (SageMaker container contract)."""
