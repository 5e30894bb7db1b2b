"""Powertools Logger, Metrics and Tracer, created once per Lambda container."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="llm-gateway")
metrics = Metrics(namespace="LlmGateway", service="llm-gateway")
tracer = Tracer(service="llm-gateway")
