"""The torch engine on the packaged SmolLM2-135M-Instruct (real weights, CPU): speculative decoding
keeps greedy output identical on a copy-heavy request, quantized logits stay close to float32,
a conversation's earlier turns are reused from the prefix cache, and the endpoint server serves it
over the SageMaker contract with requests batched together."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from llm_gateway.endpoint_contract import NDJSON, InvocationResponse, StreamEvent
from model_server.bench.__main__ import COPY_TASK
from model_server.torch_engine.decode import DecodeCore, Generation
from model_server.torch_engine.engine import Detokenizer, load_checkpoint
from model_server.torch_engine.model import Llama
from model_server.torch_engine.quant import quantize
from model_server.torch_engine.speculative import PromptLookup
from tests.integration.test_model_server import Endpoint

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smollm2() -> tuple[Llama, Any]:
    torch.set_num_threads(2)
    return load_checkpoint(None, torch.float32, torch.device("cpu"))


def chat_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def test_prompt_lookup_keeps_greedy_output_and_saves_steps_on_a_copy_task(smollm2: tuple[Llama, Any]) -> None:
    model, tokenizer = smollm2
    prompt = chat_tokens(tokenizer, [{"role": "user", "content": COPY_TASK}])
    eos = frozenset(model.shape.eos_token_ids)
    plain = DecodeCore(copy.deepcopy(model), slots=1, max_len=1024, eos_tokens=eos)
    fast = DecodeCore(copy.deepcopy(model), slots=1, max_len=1024, eos_tokens=eos, drafter=PromptLookup())
    expected, got = plain.run(Generation(prompt, 120)), fast.run(Generation(prompt, 120))
    assert got.generated == expected.generated
    assert "def scale_price" in tokenizer.decode(got.generated)  # it is copying
    assert got.accepted / got.proposed > 0.5
    assert fast.steps < 0.6 * plain.steps


def test_incremental_detokenizing_gives_the_whole_decode(smollm2: tuple[Llama, Any]) -> None:
    _, tokenizer = smollm2
    text = "Héllo wörld 🙂 — naïve café, 日本語.\n    def f(x):\n        return x ** 2  # ok\n\n  Ünïcödé!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for step in (1, 2, 3):
        detokenizer = Detokenizer(tokenizer)
        seen = [detokenizer.add(ids[i : i + step]) for i in range(0, len(ids), step)]
        assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))
        assert all("\ufffd" not in part for part in seen)
        assert detokenizer.flush() == tokenizer.decode(ids, skip_special_tokens=True) == text


def test_incremental_detokenizing_of_any_token_sequence_ends_as_the_whole_decode(smollm2: tuple[Llama, Any]) -> None:
    """Random tokens (characters split across tokens, a last character left incomplete): the
    streamed text only grows, and with `flush` it is the whole list's decode."""
    import random

    _, tokenizer = smollm2
    rng, vocab = random.Random(7), len(tokenizer)
    for _ in range(200):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        detokenizer = Detokenizer(tokenizer)
        seen = [detokenizer.add([token]) for token in ids]
        assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))
        assert detokenizer.flush() == tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize(("kind", "min_cosine", "min_agreement"), [("int8", 0.995, 0.9), ("int4", 0.99, 0.8)])
def test_quantized_logits_stay_close_to_float32(
    smollm2: tuple[Llama, Any], kind: str, min_cosine: float, min_agreement: float
) -> None:
    model, tokenizer = smollm2
    prompt = torch.tensor([chat_tokens(tokenizer, [{"role": "user", "content": "Write a short poem about the sea."}])])
    positions = torch.arange(prompt.shape[1])[None]
    base, quantized = copy.deepcopy(model), copy.deepcopy(model)
    quantize(quantized, kind)
    for m in (base, quantized):
        m.allocate_cache(1, 256)
    with torch.no_grad():
        expected, got = base(prompt, positions), quantized(prompt, positions)
    assert float(torch.nn.functional.cosine_similarity(expected, got, dim=-1).mean()) >= min_cosine
    assert float((expected.argmax(-1) == got.argmax(-1)).float().mean()) >= min_agreement


def test_a_conversations_next_turn_reuses_its_earlier_turns(smollm2: tuple[Llama, Any]) -> None:
    model, tokenizer = smollm2
    eos = frozenset(model.shape.eos_token_ids)
    core = DecodeCore(copy.deepcopy(model), slots=2, max_len=1024, eos_tokens=eos, prefix_blocks=128)
    turns = [{"role": "user", "content": "Name three rivers in Europe."}]
    first = core.run(Generation(chat_tokens(tokenizer, turns), 30, salt="acme"))
    turns += [
        {"role": "assistant", "content": tokenizer.decode(first.generated, skip_special_tokens=True)},
        {"role": "user", "content": "Which one is the longest?"},
    ]
    second_prompt = chat_tokens(tokenizer, turns)
    second = core.run(Generation(second_prompt, 20, salt="acme"))
    cold = DecodeCore(copy.deepcopy(model), slots=1, max_len=1024, eos_tokens=eos)
    # Turn one's prompt and answer blocks, up to where re-tokenizing the answer differs from its tokens.
    assert second.reused_positions > len(first.generation.prompt) // 16 * 16
    assert second.generated == cold.run(Generation(second_prompt, 20)).generated


# --------------------------------------------------------------------------- over HTTP

START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    server = Endpoint(
        tmp_path_factory.mktemp("torch-endpoint"),
        start_timeout_s=START_TIMEOUT_S,
        MODEL_SERVER_ENGINE="torch",
        MODEL_SERVER_SLOTS="4",
        MODEL_SERVER_N_CTX="512",
        MODEL_SERVER_N_THREADS="1",
        MODEL_SERVER_SPECULATIVE="prompt_lookup",
        MODEL_SERVER_PREFIX_CACHE_BLOCKS="256",
    )
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def client(endpoint: Endpoint) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.url, timeout=120) as http:
        yield http


def body(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 12, **fields}


def test_ping_names_the_model(client: httpx.Client) -> None:
    ping = client.get("/ping").json()
    assert ping == {"status": "ok", "model": "smollm2-135m-instruct-q4_1", "context_tokens": ping["context_tokens"]}
    assert ping["context_tokens"] == 512  # the engine's cache length in this test


def test_invocation_and_both_stream_paths_give_the_same_text(client: httpx.Client) -> None:
    answer = InvocationResponse.model_validate(client.post("/invocations", json=body("Tell me about the sea.")).json())
    assert answer.text and answer.finish_reason == "length" and answer.usage.completion_tokens == 12
    for path, fields in (("/invocations", {"stream": True}), ("/invocations-response-stream", {})):
        response = client.post(path, json=body("Tell me about the sea.", **fields))
        assert response.headers["content-type"].startswith(NDJSON)
        events = [StreamEvent.model_validate_json(line) for line in response.text.splitlines()]
        assert "".join(e.delta for e in events) == answer.text
        assert events[-1].usage == answer.usage and events[-1].finish_reason == "length"


def test_a_stop_string_ends_the_answer_before_it(client: httpx.Client) -> None:
    full = client.post("/invocations", json=body("Count from 1 to 10.", max_tokens=30)).json()["text"]
    stop = full.split()[2]
    cut = client.post("/invocations", json=body("Count from 1 to 10.", max_tokens=30, stop=[stop])).json()
    assert cut["finish_reason"] == "stop" and stop not in cut["text"] and full.startswith(cut["text"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client: httpx.Client) -> None:
    questions = ["What is a river?", "Name a colour.", "What is two plus two?", "Say hello.", "What is rain?"]
    alone = [client.post("/invocations", json=body(q)).json()["text"] for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(lambda q: client.post("/invocations", json=body(q)).json()["text"], questions))
    assert together == alone and len(set(alone)) == len(alone)


def test_tenant_salts_scope_prefix_reuse_without_changing_answers(client: httpx.Client) -> None:
    system = "You are the support assistant of a bicycle shop. " * 12
    asked = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Hours?"}],
        "max_tokens": 8,
    }
    answers = [client.post("/invocations", json={**asked, "cache_salt": salt}).json() for salt in ("a", "a", "b")]
    assert answers[0] == answers[1] == answers[2]


def test_inputs_the_engine_cannot_serve_are_400s(client: httpx.Client) -> None:
    json_mode = client.post("/invocations", json=body("Give JSON.", json_mode=True))
    assert json_mode.status_code == 400 and json_mode.json()["error"]["param"] == "json_mode"
    long = client.post("/invocations", json=body("word " * 700))
    assert long.status_code == 400 and "maximum context length is 512 tokens" in long.json()["error"]["message"]
    assert long.json()["error"]["code"] == "context_length_exceeded"
    assert "Traceback" not in long.text


def test_unknown_engine_options_fail_at_start(tmp_path: Path) -> None:
    from model_server.server import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_SERVER_ENGINE", "torch")
        patch.setenv("MODEL_SERVER_QUANTIZATION", "int3")
        assert main(["--port", "0"]) == 2
