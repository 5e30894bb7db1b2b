"""The sagemaker provider's boto3 transport, through SageMaker Runtime's REST API (protocol-level front)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_gateway.config import ModelConfig
from llm_gateway.contracts import ChatCompletionRequest
from llm_gateway.errors import ProviderBadRequest, ProviderThrottled, ProviderUnavailable
from llm_gateway.providers.sagemaker import SageMakerProvider
from tests.support.fake_providers import FakeServer, fake_server, ok, status
from tests.support.sagemaker_front import sagemaker_runtime_front
from tests.support.servers import serve


@pytest.fixture
def container() -> Iterator[FakeServer]:
    with fake_server("sagemaker") as server:
        yield server


@pytest.fixture
def provider(container: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[SageMakerProvider]:
    with serve(sagemaker_runtime_front({"smollm-prod": container.url})) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", front)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield SageMakerProvider()


MODEL = ModelConfig(provider="sagemaker", endpoint="smollm-prod", region="eu-west-1", timeout_s=5)
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "default", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
)


def test_invoke_endpoint_carries_the_container_contract_both_ways(
    provider: SageMakerProvider, container: FakeServer
) -> None:
    container.script.push(ok("Hello there.", prompt_tokens=9, completion_tokens=3))
    reply = provider.complete(REQUEST, "smollm", MODEL)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("Hello there.", 9, 3)
    sent = container.script.last
    assert sent.path == "/invocations"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert sent.body["stream"] is False


@pytest.mark.parametrize(
    ("code", "error"),
    [(429, ProviderThrottled), (500, ProviderUnavailable), (400, ProviderBadRequest)],
)
def test_model_errors_map_by_the_containers_original_status(
    provider: SageMakerProvider, container: FakeServer, code: int, error: type[Exception]
) -> None:
    container.script.push(status(code))
    with pytest.raises(error):
        provider.complete(REQUEST, "smollm", MODEL)


def test_unknown_endpoint_is_a_bad_request(provider: SageMakerProvider) -> None:
    with pytest.raises(ProviderBadRequest):
        provider.complete(REQUEST, "smollm", MODEL.model_copy(update={"endpoint": "no-such-endpoint"}))
