"""The response headers are defined once (`llm_gateway.response_headers`): README.md's table, the
deploy guide's list and the OpenAPI document are generated from the definition, and the values it
names are those the contracts allow."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from llm_gateway import response_headers as rh
from llm_gateway.contracts import CacheStatus, ModerateResult
from llm_gateway.http.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "paste what `python -m llm_gateway.response_headers` prints"


def test_readme_table_is_the_definition() -> None:
    readme = (ROOT / "README.md").read_text()
    assert rh.readme_table() in readme, f"README.md's response header table is not the definition: {REGENERATE}"
    documented = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `x-")}
    assert documented <= {h.name for h in rh.HEADERS}


def test_deploy_guide_lists_what_the_rest_api_sends() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert rh.rest_header_list() in guide, f"docs/deploy.md's list of REST headers is not the definition: {REGENERATE}"


def test_openapi_documents_each_header_on_the_answers_that_carry_it() -> None:
    document = openapi_document()
    responses = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    for status, response in responses.items():
        expected = {h.name for h in rh.HEADERS if status in h.statuses}
        assert set(response.get("headers", {})) == expected, status
    assert set(responses["200"]["headers"]) >= {"x-gateway-route", "x-gateway-cost-usd", "x-gateway-moderation"}
    assert responses["200"]["headers"]["x-request-id"]["required"] is True
    assert set(responses["429"]["headers"]) == {"x-request-id", "Retry-After"}
    allow = document["components"]["responses"]["MethodNotAllowed"]["headers"]
    assert set(allow) == {"Allow"}
    documented = {name for r in responses.values() for name in r.get("headers", {})} | set(allow)
    assert documented == {h.name for h in rh.HEADERS}


def test_the_values_named_are_those_the_contracts_allow() -> None:
    outcomes = set(get_args(ModerateResult.model_fields["outcome"].annotation))
    assert set(rh.MODERATION.schema["enum"]) == outcomes == {"passed", "filtered", "redacted"}
    assert set(rh.CACHE.schema["enum"]) == set(get_args(CacheStatus)) - {"bypass"}  # a bypass is sent as a miss
    for header in (rh.MODERATION, rh.CACHE):
        assert all(f"`{value}`" in header.values for value in header.schema["enum"]), header.name


def test_names_are_unique_whatever_their_case() -> None:
    names = [h.name.lower() for h in rh.HEADERS]
    assert len(names) == len(set(names))
    assert tuple(h.name for h in rh.HEADERS if rh.REST in h.runtimes) == rh.REST_HEADERS
