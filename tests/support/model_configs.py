"""Gateway configuration files for tests whose models are fake OpenAI models on one upstream."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ACME_KEY, hash_key

PRICE = "{input_per_mtok: 1.0, output_per_mtok: 2.0}"


def acme_config(folder: Path, base_url: str, models: list[str], route: str, extra: str = "") -> Path:
    """`folder/gateway.yaml`: the store in `folder`, each of `models` a fake OpenAI model of its own
    name at `base_url`, tenant acme (ACME_KEY) with the route `default` given as `route` (a YAML
    flow mapping) and rate limits out of the way; `extra`: more of acme's settings (YAML lines)."""
    lines = [f"storage_path: {folder / 'gateway.db'}", "models:"]
    lines += [
        f"  {name}: {{provider: openai, provider_model: {name}, base_url: {base_url}, "
        f"api_key_env: FAKE_OPENAI_KEY, price: {PRICE}}}"
        for name in models
    ]
    lines += [
        "tenants:",
        "  acme:",
        f"    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]",
        f"    routes: {{default: {route}}}",
        "    rate_limit: {requests_per_minute: 1000000, burst: 100000}",
        "    user_rate_limit: {requests_per_minute: 1000000, burst: 100000}",
    ]
    path = folder / "gateway.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
