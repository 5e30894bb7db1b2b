"""Traces as the gateway keeps them for a tenant with `traces.store_content` on, for the
distillation tests that fill a trace store directly (the AWS functions' tests): a support ticket
answered by the teacher with a JSON object naming the product, finished normally, moderation passed.
The questions follow tests/integration/test_distill_collect.py's, which stay apart under the
near-duplicate check."""

from __future__ import annotations

import json

from llm_gateway.ports import StepTrace, Trace

PRODUCTS = ["kettle", "router", "laptop", "phone", "camera", "printer", "blender", "monitor", "speaker", "drone"]
CUSTOMERS = ["Dana", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai"]
SYSTEM = "Reply with JSON."
TTL_S = 30 * 86_400


def question(i: int) -> str:
    who, product = CUSTOMERS[i % len(CUSTOMERS)], PRODUCTS[i % len(PRODUCTS)]
    return f"Ticket {i}: {who} writes that the {product} bought in week {i} stopped working. Which product?"


def teacher_answer(i: int) -> str:
    return json.dumps({"product": PRODUCTS[i % len(PRODUCTS)]})


def ticket_trace(i: int, ts: float, tenant: str = "acme", route: str = "default", model: str = "teacher") -> Trace:
    """Ticket `i`'s request and the teacher's answer, as the finish step traces it."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(i)}]
    return Trace(
        request_id=f"{tenant}-ticket-{i}",
        tenant=tenant,
        ts=ts,
        expires_at=ts + TTL_S,
        outcome="ok",
        route=route,
        model=model,
        latency_ms=40.0,
        steps=[
            StepTrace(name="guard", detail={"outcome": "allowed"}),
            StepTrace(name="invoke", detail={"model": model, "choices": ["stop"]}),
            StepTrace(name="moderate", detail={"outcome": "passed"}),
            StepTrace(name="finish", detail={}),
        ],
        content={
            "messages": messages,
            "request": {"model": route},
            "answer": [{"role": "assistant", "content": teacher_answer(i)}],
        },
    )


def config_yaml(opted_in: str = "acme") -> str:
    """A configuration whose teacher allows training on its outputs: `opted_in` keeps content and
    opted in; `globex` keeps content without opting in; `initech` opted in but keeps no content."""
    return f"""
models:
  teacher: {{provider: openai, provider_model: teacher, allows_training: true}}
tenants:
  {opted_in}:
    api_keys: [{{id: k1, sha256: {"a" * 64}}}]
    routes: {{default: {{model: teacher}}}}
    traces: {{store_content: true}}
    training: {{opt_in: true, min_quality_ratio: 0.9}}
  globex:
    api_keys: [{{id: k1, sha256: {"b" * 64}}}]
    routes: {{default: {{model: teacher}}}}
    traces: {{store_content: true}}
  initech:
    api_keys: [{{id: k1, sha256: {"c" * 64}}}]
    routes: {{default: {{model: teacher}}}}
    training: {{opt_in: true}}
"""
