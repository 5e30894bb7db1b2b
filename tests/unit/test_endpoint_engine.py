"""The endpoint's engine layer: settings, the engine registry, and the llama.cpp engine itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from llm_gateway.endpoint_contract import EndpointMessage, InvocationRequest, StreamEvent
from model_server.engines import (
    Engine,
    EngineInputError,
    EngineUnavailable,
    available_engines,
    base,
    load_engine,
    register_engine,
)
from model_server.engines.llamacpp import (
    PACKAGED_MODEL_ID,
    LlamaCppEngine,
    finish_reason,
    packaged_model_path,
)
from model_server.settings import DEFAULT_MAX_BODY_BYTES, EndpointSettings

# ----------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    settings = EndpointSettings.from_env({})
    assert settings.engine == "llamacpp"
    assert settings.model_path is None
    assert settings.n_ctx == 2048
    assert settings.n_threads is None
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    # Unset optional values are left to the engine's own defaults.
    assert settings.engine_settings() == {"n_ctx": 2048}


def test_settings_from_env() -> None:
    settings = EndpointSettings.from_env(
        {
            "MODEL_SERVER_ENGINE": "torch",
            "MODEL_SERVER_MODEL_PATH": "/opt/ml/model/model.gguf",
            "MODEL_SERVER_MODEL_ID": "my-model",
            "MODEL_SERVER_N_CTX": "4096",
            "MODEL_SERVER_N_THREADS": "3",
            "MODEL_SERVER_MAX_BODY_BYTES": "65536",
            "MODEL_SERVER_SLOTS": "16",
            "MODEL_SERVER_QUANTIZATION": "int8",
            "MODEL_SERVER_SPECULATIVE": "prompt_lookup",
            "MODEL_SERVER_PREFIX_CACHE_BLOCKS": "1024",
            "MODEL_SERVER_COMPILE": "true",
            "UNRELATED": "x",
        }
    )
    assert settings.engine == "torch"
    assert settings.max_body_bytes == 65536
    assert settings.engine_settings() == {
        "n_ctx": 4096,
        "model_path": Path("/opt/ml/model/model.gguf"),
        "model_id": "my-model",
        "n_threads": 3,
        "device": "auto",
        "dtype": "auto",
        "slots": 16,
        "quantization": "int8",
        "speculative": "prompt_lookup",
        "draft_tokens": 8,
        "prefix_cache_blocks": 1024,
        "compile": True,
    }
    # The llama.cpp engine gets only what it understands.
    assert "slots" not in settings.model_copy(update={"engine": "llamacpp"}).engine_settings()


def test_settings_empty_variables_count_as_unset() -> None:
    settings = EndpointSettings.from_env({"MODEL_SERVER_N_THREADS": "", "MODEL_SERVER_MODEL_PATH": "  "})
    assert settings.n_threads is None
    assert settings.model_path is None


def test_settings_under_the_former_prefix_are_refused_with_the_new_name() -> None:
    with pytest.raises(ValueError, match="MODEL_SERVER_N_CTX"):
        EndpointSettings.from_env({"GPU_ENDPOINT_N_CTX": "4096"})


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("MODEL_SERVER_N_CTX", "lots", "n_ctx"),
        ("MODEL_SERVER_N_CTX", "8", "n_ctx"),
        ("MODEL_SERVER_N_THREADS", "0", "n_threads"),
        ("MODEL_SERVER_MAX_BODY_BYTES", "-1", "max_body_bytes"),
        ("MODEL_SERVER_QUANTIZATION", "int3", "quantization"),
        ("MODEL_SERVER_SPECULATIVE", "medusa", "speculative"),
        ("MODEL_SERVER_SLOTS", "0", "slots"),
        ("MODEL_SERVER_DEVICE", "tpu", "device"),
    ],
)
def test_settings_reject_bad_values(variable: str, value: str, field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        EndpointSettings.from_env({variable: value})
    assert excinfo.value.errors()[0]["loc"] == (field,)


# ----------------------------------------------------------------------------- registry


def test_unknown_engine_is_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match=r"unknown engine 'vllm' \(available: llamacpp, torch\)"):
        load_engine("vllm")


def test_torch_engine_is_built_in_and_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    assert available_engines() == ["llamacpp", "torch"]
    with pytest.raises(EngineUnavailable, match="model not found"):
        load_engine("torch", model_path=tmp_path / "missing")
    with pytest.raises(EngineUnavailable, match="unknown quantization 'int3'"):
        load_engine("torch", quantization="int3")
    with pytest.raises(EngineUnavailable, match="needs a draft model"):
        load_engine("torch", speculative="draft")


def test_register_engine_makes_a_name_loadable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_FACTORIES", dict(base._FACTORIES))

    def refuse(**settings: object) -> Engine:
        raise EngineUnavailable(f"no GPU here (settings {sorted(settings)})")

    register_engine("torch", refuse)
    assert available_engines() == ["llamacpp", "torch"]
    with pytest.raises(EngineUnavailable, match=r"no GPU here \(settings \['n_ctx'\]\)"):
        load_engine("torch", n_ctx=1024)


# ----------------------------------------------------------------------------- llama.cpp engine (no model)


def test_packaged_model_is_found_without_importing_the_package() -> None:
    path = packaged_model_path()
    assert path.is_file()
    assert path.suffix == ".gguf"


def test_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="model file not found"):
        LlamaCppEngine(tmp_path / "absent.gguf")


def test_unreadable_model_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file")
    with pytest.raises(EngineUnavailable, match="cannot load model"):
        LlamaCppEngine(path)


@pytest.mark.parametrize(
    ("raw", "mapped"), [("length", "length"), ("stop", "stop"), (None, "stop"), ("tool_calls", "stop")]
)
def test_finish_reason_mapping(raw: str | None, mapped: str) -> None:
    assert finish_reason(raw) == mapped


# ----------------------------------------------------------------------------- llama.cpp engine (model)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    # One thread: with every core busy, llama.cpp's spinning OpenMP barriers stall whenever another
    # process takes a core (seconds per token on a shared 2-core runner); one thread never waits.
    loaded = load_engine("llamacpp", n_ctx=512, n_threads=1)
    assert isinstance(loaded, LlamaCppEngine)
    yield loaded
    loaded.close()


def _request(content: str, **fields: object) -> InvocationRequest:
    return InvocationRequest.model_validate(
        {"messages": [{"role": "user", "content": content}], "temperature": 0, **fields}
    )


def _collect(events: Iterator[StreamEvent]) -> tuple[str, StreamEvent]:
    collected = list(events)
    *deltas, last = collected
    assert all(e.finish_reason is None and e.usage is None for e in deltas)
    assert last.delta == ""
    return "".join(e.delta for e in deltas), last


@pytest.mark.model
def test_engine_satisfies_the_protocol(engine: LlamaCppEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "llamacpp"
    assert engine.model_id == PACKAGED_MODEL_ID


@pytest.mark.model
@pytest.mark.parametrize(
    ("content", "fields", "finish"),
    [
        ("Tell me about the sea.", {"max_tokens": 12}, "length"),
        ("What is 2+2? Answer with just the number.", {"max_tokens": 48}, "stop"),  # end-of-turn token
        ("Tell me about the sea.", {"max_tokens": 48, "stop": [" the"]}, "stop"),  # stop sequence
        ("Tell me about the sea.", {"max_tokens": 12, "temperature": 0.9, "seed": 11}, "length"),
    ],
)
def test_stream_matches_generate(engine: LlamaCppEngine, content: str, fields: dict[str, object], finish: str) -> None:
    req = _request(content, **fields)
    answer = engine.generate(req)
    text, last = _collect(engine.stream(req))
    assert answer.finish_reason == finish
    assert text == answer.text
    assert last.finish_reason == answer.finish_reason
    # Streamed usage is counted independently of llama.cpp's own (non-stream) usage.
    assert last.usage == answer.usage
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= req.max_tokens


@pytest.mark.model
def test_stop_sequence_is_not_returned(engine: LlamaCppEngine) -> None:
    free = engine.generate(_request("Tell me about the sea.", max_tokens=24))
    assert " the" in free.text
    answer = engine.generate(_request("Tell me about the sea.", max_tokens=24, stop=[" the"]))
    assert answer.finish_reason == "stop"
    assert " the" not in answer.text
    assert free.text.startswith(answer.text)


@pytest.mark.model
def test_length_limit(engine: LlamaCppEngine) -> None:
    answer = engine.generate(_request("Tell me about the sea.", max_tokens=3))
    assert answer.finish_reason == "length"
    assert answer.usage.completion_tokens == 3


@pytest.mark.model
def test_json_mode_constrains_output(engine: LlamaCppEngine) -> None:
    answer = engine.generate(_request("Describe a cat.", max_tokens=16, json_mode=True))
    assert answer.text.lstrip().startswith("{")


@pytest.mark.model
def test_system_and_assistant_turns(engine: LlamaCppEngine) -> None:
    req = InvocationRequest(
        messages=[
            EndpointMessage(role="system", content="You answer in one word."),
            EndpointMessage(role="user", content="Name a colour."),
            EndpointMessage(role="assistant", content="Blue."),
            EndpointMessage(role="user", content="Another one."),
        ],
        max_tokens=8,
    )
    short = engine.generate(_request("Another one.", max_tokens=8))
    answer = engine.generate(req)
    assert answer.text
    assert answer.usage.prompt_tokens > short.usage.prompt_tokens


@pytest.mark.model
def test_prompt_over_context_is_an_input_error(engine: LlamaCppEngine) -> None:
    req = _request("word " * 600, max_tokens=4)
    with pytest.raises(EngineInputError, match="context window") as excinfo:
        engine.generate(req)
    assert excinfo.value.param == "messages"
    with pytest.raises(EngineInputError, match="context window"):
        list(engine.stream(req))
    # The engine is still usable: the lock was released on both paths.
    assert engine.generate(_request("Hi", max_tokens=2)).usage.completion_tokens == 2


@pytest.mark.model
def test_closing_a_stream_early_releases_the_engine(engine: LlamaCppEngine) -> None:
    events = engine.stream(_request("Tell me a long story.", max_tokens=400))
    next(events)
    close = getattr(events, "close", None)
    assert close is not None
    close()
    answers = []
    worker = threading.Thread(target=lambda: answers.append(engine.generate(_request("Hi", max_tokens=2))))
    worker.start()
    worker.join(timeout=30)
    assert answers, "the engine stayed locked after the stream was closed"
