"""The OpenAI-compatible request contract: what is accepted, what is refused and how it is named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llm_gateway.contracts import ChatCompletionRequest
from llm_gateway.errors import InvalidRequest, from_validation_error


def refusal(body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    return from_validation_error(caught.value)


def test_unknown_top_level_field_is_refused_by_name() -> None:
    error = refusal({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools_v9": []})
    assert error.param == "tools_v9"
    assert "Unrecognized request argument supplied: tools_v9" in error.message


def test_bad_role_names_the_nested_field() -> None:
    error = refusal({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]})
    assert error.param == "messages.1.role"
    assert error.status == 400


def test_missing_messages_is_a_missing_parameter() -> None:
    error = refusal({"model": "m"})
    assert error.param == "messages" and error.code == "missing_required_parameter"


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 3), ("top_p", 0), ("n", 0), ("n", 129), ("max_tokens", 0), ("stop", ["a", "b", "c", "d", "e"])],
)
def test_out_of_range_generation_parameters_are_refused(field: str, value: Any) -> None:
    error = refusal({"model": "m", "messages": [{"role": "user", "content": "x"}], field: value})
    assert error.param is not None and error.param.startswith(field)


def test_user_message_needs_content_but_assistant_may_omit_it() -> None:
    refusal({"model": "m", "messages": [{"role": "user"}]})
    ok = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}
    )
    assert ok.messages[1].text() == ""


def test_text_parts_are_joined_and_images_contribute_no_text() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe "},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "text", "text": "this"},
                    ],
                }
            ],
        }
    )
    assert request.messages[0].text() == "describe this"


def test_generation_params_leave_out_what_does_not_shape_the_answer() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "user": "u-1",
            "metadata": {"team": "a"},
            "temperature": 0.2,
            "max_tokens": 9,
        }
    )
    assert request.generation_params() == {"temperature": 0.2, "max_tokens": 9}
    assert request.output_limit() == 9


def test_a_gateway_error_survives_the_trip_through_a_lambda_error() -> None:
    """str(error) is what Lambda reports; from_step_error rebuilds the same error from Step Functions' Catch."""
    import json

    from llm_gateway.contracts import StepError
    from llm_gateway.errors import AllModelsFailed, InternalError, RateLimited, from_step_error

    original = RateLimited("Rate limit reached for this user.", retry_after_s=1.5)
    cause = json.dumps({"errorMessage": str(original), "errorType": "RateLimited"})
    rebuilt = from_step_error(StepError(Error="RateLimited", Cause=cause))
    assert isinstance(rebuilt, RateLimited)
    assert (rebuilt.message, rebuilt.retry_after_s, rebuilt.status) == (original.message, 1.5, 429)
    timeout = from_step_error(StepError(Error="Sandbox.Timedout", Cause="Task timed out after 30 seconds"))
    assert isinstance(timeout, InternalError) and "30 seconds" not in timeout.message
    garbled = from_step_error(StepError(Error="AuthenticationFailed", Cause="not json"))
    assert garbled.status == 401
    # what a request for several choices had paid for when one failed travels with its error
    spent = {"model": "claude", "provider": "anthropic", "attempts": [], "latency_ms": 1.0, "response": {"x": 1}}
    paid = AllModelsFailed("No model could answer.", spent=spent)
    cause = json.dumps({"errorMessage": str(paid), "errorType": "AllModelsFailed"})
    assert from_step_error(StepError(Error="AllModelsFailed", Cause=cause)).spent == spent
