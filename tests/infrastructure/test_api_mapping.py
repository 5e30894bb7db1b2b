"""The API's request model and mapping templates, checked without synthesizing: the model is valid
draft 4 and agrees with the pydantic contract; the request template yields a valid `GatewayState`."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from cdk import api_mapping
from cdk import constants as c
from cdk.constructs.api import request_schema
from cdk.draft4 import DRAFT4, to_draft4
from llm_gateway.contracts import ChatCompletionRequest, ErrorBody, GatewayState

jsonschema = pytest.importorskip("jsonschema")

DRAFT4_KEYWORDS = {
    "$schema", "type", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "oneOf",
    "allOf", "not", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "multipleOf", "pattern", "format",
    "title", "description",
}  # fmt: skip

USER = {"role": "user", "content": "hi"}

# (body, accepted by the API's model). Where pydantic disagrees, KNOWN_GAPS says why.
SAMPLES: list[tuple[dict[str, Any], bool]] = [
    ({"model": "default", "messages": [USER]}, True),
    ({"model": "default", "messages": [USER], "temperature": 0.2, "max_tokens": 16, "stop": ["\n"]}, True),
    ({"model": "default", "messages": [USER], "unknown": 1}, False),
    ({"model": "default", "messages": []}, False),
    ({"messages": [USER]}, False),
    ({"model": "", "messages": [USER]}, False),
    ({"model": "default", "messages": [USER], "top_p": 0}, False),
    ({"model": "default", "messages": [USER], "top_p": 1}, True),
    ({"model": "default", "messages": [USER], "n": 1}, True),
    ({"model": "default", "messages": [USER], "n": 2}, True),  # limits.max_choices caps it in the guard
    ({"model": "default", "messages": [USER], "n": 129}, False),
    ({"model": "default", "messages": [USER], "n": 0}, False),
    ({"model": "default", "messages": [USER], "temperature": 3}, False),
    ({"model": "default", "messages": [{"role": "robot", "content": "x"}]}, False),
    ({"model": "default", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, True),
    (
        {
            "model": "default",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
        },
        True,
    ),
    ({"model": "default", "messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}, False),
    ({"model": "default", "messages": [USER], "metadata": {"a": 1}}, False),
    ({"model": "default", "messages": [USER], "metadata": {"a": "b"}}, True),
    (
        {
            "model": "default",
            "messages": [USER],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        },
        True,
    ),
    ({"model": "default", "messages": [USER], "stream": True}, False),
    ({"model": "default", "messages": [USER], "stop": ["a", "b", "c", "d", "e"]}, False),
    ({"model": "default", "messages": [{"role": "user", "content": None}]}, False),
    ({"model": "default", "messages": [{"role": "user"}]}, False),
    ({"model": "default", "messages": [USER, {"role": "assistant"}]}, True),
]
KNOWN_GAPS = {
    # Step Functions cannot stream: the REST API refuses it; the streaming URL serves it.
    json.dumps({"model": "default", "messages": [USER], "stream": True}),
}


def keywords(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(keywords(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set(node)
    for key, value in node.items():
        if key == "properties":
            found |= set().union(*(keywords(sub) for sub in value.values()))
        elif key != "enum":
            found |= keywords(value)
    return found


def test_request_model_is_draft4_with_only_keywords_api_gateway_accepts() -> None:
    schema = request_schema()
    assert schema["$schema"] == DRAFT4
    jsonschema.Draft4Validator.check_schema(schema)
    assert keywords(schema) <= DRAFT4_KEYWORDS
    assert "$ref" not in json.dumps(schema)


@pytest.mark.parametrize(("body", "accepted"), SAMPLES, ids=[json.dumps(b)[:60] for b, _ in SAMPLES])
def test_request_model_agrees_with_the_contract(body: dict[str, Any], accepted: bool) -> None:
    validator = jsonschema.Draft4Validator(request_schema())
    assert validator.is_valid(body) is accepted
    try:
        ChatCompletionRequest.model_validate(body)
        pydantic_accepts = True
    except ValidationError:
        pydantic_accepts = False
    assert (pydantic_accepts == accepted) != (json.dumps(body) in KNOWN_GAPS)


def test_conversion_refuses_keywords_without_a_draft4_equivalent() -> None:
    with pytest.raises(ValueError, match="prefixItems"):
        to_draft4({"type": "array", "prefixItems": [{"type": "string"}]})
    with pytest.raises(ValueError, match="recursive"):
        to_draft4({"$ref": "#/$defs/Node", "$defs": {"Node": {"properties": {"next": {"$ref": "#/$defs/Node"}}}}})


def escape_javascript(text: str) -> str:
    """What API Gateway's $util.escapeJavaScript does (Apache Commons Lang), then `replaceAll("\\'", "'")`."""
    named = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\n": "\\n", "\t": "\\t", "\f": "\\f", "\r": "\\r"}
    out = []
    units = text.encode("utf-16-be")
    for index in range(0, len(units), 2):
        code = int.from_bytes(units[index : index + 2], "big")
        char = chr(code) if not 0xD800 <= code <= 0xDFFF else ""
        if char in named:
            out.append(named[char])
        elif code < 32 or code > 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return "".join(out)


def render_request(body: dict[str, Any], cache_control: str | None) -> dict[str, Any]:
    """The request template's output for one call: its VTL expressions replaced by what they yield."""
    text = "\n".join(line for line in api_mapping.REQUEST_TEMPLATE.splitlines() if not line.startswith("#"))
    raw = json.dumps(body, ensure_ascii=False)
    # The header is a string inside the input string: escaped twice.
    cache = "null" if cache_control is None else '\\"' + escape_javascript(escape_javascript(cache_control)) + '\\"'
    replacements = {
        api_mapping.STATE_MACHINE_ARN: "arn:aws:states:eu-west-1:123456789012:stateMachine:chain",
        """$util.escapeJavaScript($input.json('$')).replaceAll("\\\\'", "'")""": escape_javascript(raw),
        """#if("$!cacheControl" == "")null#{else}\\"$util.escapeJavaScript($util.escapeJavaScript($cacheControl))"""
        """.replaceAll("\\\\'", "'")\\"#end""": cache,
        "$context.requestId": "c0ffee00-0000-4000-8000-000000000001",
        "${seconds}.${millis}": "1700000000.123",
        "$context.authorizer.api_key_sha256": "ab" * 32,
        "$context.identity.sourceIp": "198.51.100.4",
        "$input.body.length()": str(len(raw)),
    }
    for expression, value in replacements.items():
        assert expression in text, expression
        text = text.replace(expression, value)
    assert "$" not in text.replace("\\u", ""), text  # every VTL expression is accounted for
    result: dict[str, Any] = json.loads(text)
    return result


@pytest.mark.parametrize("cache_control", [None, "no-cache", 'max-age=0, x="y"'])
def test_request_template_builds_the_gateway_state(cache_control: str | None) -> None:
    # Given a body with every character class that needs escaping
    content = 'It\'s "quoted", back\\slash, a/b, tab\tnew\nline, é, 😀'
    body = {"model": "default", "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    # When API Gateway renders StartSyncExecution's body
    call = render_request(body, cache_control)
    # Then the execution input is the GatewayState the chain starts from, the body intact
    assert call["name"] == "c0ffee00-0000-4000-8000-000000000001"
    state = GatewayState.model_validate_json(call["input"])
    assert state.request.messages[0].content == content
    assert state.received_at == 1700000000.123
    assert state.caller.api_key_sha256 == "ab" * 32
    assert state.caller.client_ip == "198.51.100.4"
    assert state.caller.cache_control == cache_control
    assert state.caller.body_bytes > 0


def test_error_bodies_have_the_openai_shape() -> None:
    ErrorBody.model_validate_json(api_mapping.INTERNAL_ERROR_BODY)
    assert api_mapping.INTERNAL_ERROR_BODY in api_mapping.RESPONSE_TEMPLATE
    for _, template in api_mapping.GATEWAY_RESPONSES.values():
        ErrorBody.model_validate_json(template.replace("$context.error.messageString", '"Invalid request body"'))


def test_response_template_sets_the_headers_the_definition_gives_the_rest_api() -> None:
    # The method declares, and the template sets, exactly the headers `response_headers` marks REST.
    from llm_gateway import response_headers

    template = api_mapping.RESPONSE_TEMPLATE
    set_here = set(re.findall(r"#set\(\$context\.responseOverride\.header\.([A-Za-z-]+) = ", template))
    assert set_here == set(api_mapping.ANSWER_HEADERS) == set(response_headers.REST_HEADERS)
    assert {"x-gateway-cost-usd", "x-gateway-compression-saved-tokens", "x-gateway-groundedness"} <= set_here
    # Decision headers only on a 200 answer, as the local server sends them: a refusal carries the
    # request id and Retry-After only.
    answer_only = template.index("#if($answer.status == 200)")
    for header in response_headers.HEADERS:
        if response_headers.REST in header.runtimes and header.statuses == response_headers.ANSWER:
            assert template.index(f"responseOverride.header.{header.name} =") > answer_only, header.name
    for header in (response_headers.REQUEST_ID, response_headers.RETRY_AFTER):
        assert template.index(f"responseOverride.header.{header.name} =") < answer_only


def _field_type(model: type[BaseModel], name: str) -> Any:
    """The model class (or plain type) of `model.name`, through `X | None`."""
    annotation = model.model_fields[name].annotation
    classes = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return classes[0] if classes else annotation


def test_every_state_path_the_response_template_reads_is_a_field_of_the_gateway_state() -> None:
    template = api_mapping.RESPONSE_TEMPLATE
    # `$state.a.b` and `$state.a.b.size()` (a method of the value, not a field)
    found = re.finditer(r"\$state\.([a-z_]+(?:\.[a-z_]+)*)(\()?", template)
    paths = {m[1].rsplit(".", 1)[0] if m[2] else m[1] for m in found} - {c.HTTP_RESULT}
    assert {"cache.route", "finish.cost_usd", "guard.saved_tokens"} <= paths
    for path in paths:
        model: Any = GatewayState
        for name in path.split("."):
            assert isinstance(model, type) and issubclass(model, BaseModel), path
            assert name in model.model_fields, f"$state.{path}: {model.__name__} has no field {name}"
            model = _field_type(model, name)


def test_a_cache_hit_gets_its_route_no_attempts_and_its_cost_from_the_rest_api() -> None:
    template = api_mapping.RESPONSE_TEMPLATE
    # the router does not run on a hit: the cache step's route; no model call; finish's cost (0)
    route = "#elseif($state.cache.route)\n#set($context.responseOverride.header.x-gateway-route = $state.cache.route)"
    assert route in template
    assert '#else\n#set($context.responseOverride.header.x-gateway-attempts = "0")\n#end' in template
    cost = '\n#set($context.responseOverride.header.x-gateway-cost-usd = "$state.finish.cost_usd")\n'
    assert cost in template
    answer_block = template[template.index("#if($answer.status == 200)") :]
    assert answer_block.index(cost) < answer_block.index("#if($state.guard")  # outside `#if($state.invoke)`
