"""The configurations the HTTP benchmarks run (`bench/config_cpu.py`, `bench/http_overhead.py`).

llm-gateway:
- `example`: `llm_gateway/example_config.yaml` as shipped, with three changes a benchmark needs: its
  self-hosted model (also the judge and the consistency checker that name it) points at the fake
  upstream, keys are fixed instead of minted, and the rate limits are raised so that no request
  is refused for pace;
- `minimal`: the same two tenants with the cache off and only an output blocklist.

LiteLLM (the proxy, one worker):
- `litellm-minimal`: one model, no cache, no callbacks (the side-by-side harness's config);
- `litellm-pii`: its in-memory response cache and the PII masking below, no keyword categories;
- `litellm-comparable`: the features of `example` that LiteLLM has offline, in one global set
  (LiteLLM's per-key guardrails need its database): its in-memory response cache (`type: local`,
  exact match) and its `litellm_content_filter` guardrail before the call (masking e-mail
  addresses, phone numbers, SSNs, cards, IBANs and IP addresses; blocking its jailbreak,
  system-prompt, weapons, violence, self-harm, abuse and medical/legal-advice keyword categories)
  and after it (the weapons, violence and self-harm categories and the PII patterns on the
  answer; not its abuse word list, which refuses ordinary answers). It has no semantic
  cache, no classifier and no embedding-based topic filter: its categories are keyword lists;
- `litellm-comparable-pi`: the same plus its prompt-injection heuristics
  (`detect_prompt_injection` with `heuristics_check`: fuzzy matching of attack phrases against
  every substring, ~0.5 s of CPU per request here, so it is measured apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llm_gateway.config import EXAMPLE_CONFIG, hash_key

KEYS = {"acme": "sk-bench-acme", "globex": "sk-bench-globex"}
LITELLM_KEY = "sk-bench-litellm-" + "0" * 48
LOCAL_MODEL = "smollm2-135m-instruct-q4_1"
UNLIMITED = {"requests_per_minute": 100_000_000, "burst": 1_000_000}
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"


def example_config(upstream: str, storage: Path, source: Path = EXAMPLE_CONFIG) -> dict[str, Any]:
    """The shipped example config (`source`: another checkout's, for before/after runs) adapted
    to the fake upstream."""
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    config["storage_path"] = str(storage)
    config["models"][LOCAL_MODEL] = {
        "provider": "openai",
        "base_url": upstream,
        "api_key_env": UPSTREAM_KEY_ENV,
        "price": config["models"][LOCAL_MODEL]["price"],
    }
    for name, tenant in config["tenants"].items():
        tenant.pop("demo", None)
        tenant["api_keys"] = [{"id": "bench", "sha256": hash_key(KEYS[name])}]
        tenant["rate_limit"] = UNLIMITED
        if "user_rate_limit" in tenant:
            tenant["user_rate_limit"] = UNLIMITED
    return config


def minimal_config(upstream: str, storage: Path) -> dict[str, Any]:
    tenant = {
        "routes": {"default": {"model": "fake"}},
        "rate_limit": UNLIMITED,
        "output_blocklist": {"keywords": ["forbidden"]},
    }
    return {
        "cache": {"enabled": False},
        "storage_path": str(storage),
        "models": {
            "fake": {
                "provider": "openai",
                "base_url": upstream,
                "api_key_env": UPSTREAM_KEY_ENV,
                "price": {"input_per_mtok": 0.15, "cached_input_per_mtok": 0.075, "output_per_mtok": 0.6},
            }
        },
        "tenants": {
            name: {**tenant, "api_keys": [{"id": "bench", "sha256": hash_key(key)}]} for name, key in KEYS.items()
        },
    }


GATEWAY_CONFIGS = {"example": example_config, "minimal": minimal_config}

_PII = ("email", "us_phone", "us_ssn", "credit_card", "iban", "ipv4")
_INPUT_CATEGORIES = (
    "prompt_injection_jailbreak",
    "prompt_injection_system_prompt",
    "harmful_illegal_weapons",
    "harmful_violence",
    "harmful_self_harm",
    "harm_toxic_abuse",
    "denied_medical_advice",
    "denied_legal_advice",
)
# Not harm_toxic_abuse on answers: its word list refuses ordinary ones (the harness's fixed answer,
# "Rayleigh scattering makes blue light dominate the daytime sky.", for "dominate").
_OUTPUT_CATEGORIES = ("harmful_illegal_weapons", "harmful_violence", "harmful_self_harm")


def _content_filter(name: str, mode: str, categories: tuple[str, ...]) -> dict[str, Any]:
    return {
        "guardrail_name": name,
        "litellm_params": {
            "guardrail": "litellm_content_filter",
            "mode": mode,
            "default_on": True,
            "patterns": [{"pattern_type": "prebuilt", "pattern_name": p, "action": "MASK"} for p in _PII],
            "categories": [{"category": c, "enabled": True, "action": "BLOCK"} for c in categories],
        },
    }


# name -> (response cache and PII masking, keyword categories, prompt-injection heuristics)
LITELLM_VARIANTS = {
    "litellm-minimal": (False, False, False),
    "litellm-pii": (True, False, False),
    "litellm-comparable": (True, True, False),
    "litellm-comparable-pi": (True, True, True),
}


def litellm_config(upstream: str, variant: str, model_names: tuple[str, ...] = ("default", "fake")) -> dict[str, Any]:
    """LiteLLM's proxy config for a `LITELLM_VARIANTS` name: every name in `model_names` is the
    fake upstream's model."""
    filtered, categorised, injection = LITELLM_VARIANTS[variant]
    settings: dict[str, Any] = {
        "telemetry": False,
        "cache": filtered,
        "callbacks": ["detect_prompt_injection"] if injection else [],
        "success_callback": [],
        "failure_callback": [],
        "service_callback": [],
        "set_verbose": False,
        "request_timeout": 30,
    }
    config: dict[str, Any] = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": "openai/fake", "api_base": upstream, "api_key": "dummy"}}
            for name in model_names
        ],
        "litellm_settings": settings,
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }
    if filtered:
        settings["cache_params"] = {"type": "local", "ttl": 3600}
        config["guardrails"] = [
            _content_filter("input-filter", "pre_call", _INPUT_CATEGORIES if categorised else ()),
            _content_filter("output-filter", "post_call", _OUTPUT_CATEGORIES if categorised else ()),
        ]
    if injection:
        settings["prompt_injection_params"] = {"heuristics_check": True}
    return config
