"""Configuration is validated at start-up with errors that name the offending path."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gateway.config import EXAMPLE_CONFIG, Price, hash_key, load_config, parse_config
from llm_gateway.errors import ConfigError

MODELS = "models:\n  m1: {provider: echo}\n"


def test_the_shipped_example_config_is_valid_and_has_two_demo_tenants() -> None:
    config = load_config(EXAMPLE_CONFIG)
    demo = [name for name, tenant in config.tenants.items() if tenant.demo]
    assert len(demo) >= 2
    assert all("default" in config.tenants[name].routes for name in demo)
    assert config.limits.max_body_bytes == 1024 * 1024


def test_a_route_to_an_unknown_model_is_refused_with_its_path() -> None:
    text = MODELS + "tenants:\n  t:\n    routes: {default: {model: m1, fallbacks: [nope]}}\n"
    with pytest.raises(ConfigError, match=r"tenants\.t\.routes\.default: unknown model 'nope'"):
        parse_config(text)


def test_one_key_shared_by_two_tenants_is_refused() -> None:
    digest = hash_key("shared")
    text = MODELS + (
        "tenants:\n"
        f"  a: {{routes: {{default: {{model: m1}}}}, api_keys: [{{id: k, sha256: {digest}}}]}}\n"
        f"  b: {{routes: {{default: {{model: m1}}}}, api_keys: [{{id: k, sha256: {digest}}}]}}\n"
    )
    with pytest.raises(ConfigError, match="also used by"):
        parse_config(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        (
            MODELS + "tenants:\n  t: {routes: {default: {model: m1}}, output_blocklist: {patterns: ['(']}}\n",
            "bad regular",
        ),
        (MODELS + "tenants:\n  t: {routes: {default: {model: m1}}, colour: blue}\n", "tenants.t.colour"),
        ("models:\n  s: {provider: sagemaker}\ntenants:\n  t: {routes: {default: {model: s}}}\n", "needs `endpoint`"),
        (MODELS + "tenants:\n  t: {routes: {default: {model: m1}}, api_keys: [{id: k, sha256: plain}]}\n", "sha256"),
    ],
)
def test_invalid_configurations_are_explained(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_cached_input_tokens_are_priced_separately() -> None:
    price = Price(input_per_mtok=2.0, cached_input_per_mtok=0.5, output_per_mtok=8.0)
    # 1000 prompt tokens of which 600 cached, 100 completion tokens
    assert price.cost(1000, 100, 600) == pytest.approx((400 * 2.0 + 600 * 0.5 + 100 * 8.0) / 1e6)
    assert Price(input_per_mtok=2.0).cost(1000, 0, 600) == pytest.approx(1000 * 2.0 / 1e6)
