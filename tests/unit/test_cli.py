"""The command line: configuration errors are explained, keys are hashed, demo keys are minted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from llm_gateway.cache.keys import kb_tag, prompt_tag
from llm_gateway.cli.main import main, mint_demo_keys, with_endpoint_url
from llm_gateway.config import EXAMPLE_CONFIG, hash_key, load_config, parse_config


def test_serve_with_a_bad_config_exits_2_with_the_problem_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {m: {provider: echo}}\ntenants: {t: {routes: {default: {model: missing}}}}\n")
    assert main(["serve", "--port", "0", "--config", str(bad)]) == 2
    assert "tenants.t.routes.default: unknown model 'missing'" in capsys.readouterr().err


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE_CONFIG)]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 tenants")


def test_hash_key_from_argument_or_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["hash-key", "sk-one"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-one")
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-two\n"))
    assert main(["hash-key", "-"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-two")


def test_demo_tenants_get_fresh_keys_stored_only_as_digests() -> None:
    config, minted = mint_demo_keys(load_config(EXAMPLE_CONFIG))
    _, minted_again = mint_demo_keys(load_config(EXAMPLE_CONFIG))
    assert set(minted) == {"acme", "globex"}
    assert minted["acme"] != minted_again["acme"]
    stored = [key.sha256 for key in config.tenants["acme"].api_keys]
    assert stored == [hash_key(minted["acme"])]
    assert minted["acme"] not in config.model_dump_json()


def test_local_models_are_pointed_at_the_started_endpoint() -> None:
    config = with_endpoint_url(load_config(EXAMPLE_CONFIG), "http://127.0.0.1:9999")
    assert config.models["smollm2-135m-instruct-q4_1"].endpoint == "http://127.0.0.1:9999"
    assert not config.uses_local_endpoint()


STUDENTS = """
models:
  packaged: {provider: sagemaker, endpoint: local}
  student-a: {provider: sagemaker, endpoint: local, weights: /students/a}
  student-a-long: {provider: sagemaker, endpoint: local, weights: /students/x/../a/, default_max_tokens: 64}
  student-b: {provider: sagemaker, endpoint: local, weights: /students/b.gguf}
  hosted: {provider: echo}
tenants:
  t: {routes: {default: {model: packaged}}}
"""


def test_each_distinct_weights_is_one_endpoint_with_the_engine_its_format_needs() -> None:
    from llm_gateway.cli.supervisor import endpoint_command, local_endpoint_groups

    config = parse_config(STUDENTS)
    groups = local_endpoint_groups(config)
    assert groups == {
        None: {"packaged"},
        "/students/a": {"student-a", "student-a-long"},
        "/students/b.gguf": {"student-b"},
    }
    assert next(iter(groups)) is None  # the packaged model's endpoint first (/healthz's `model_endpoint`)
    assert endpoint_command(None)[1:] == ["-m", "model_server"]
    assert endpoint_command("/students/a")[3:] == ["--engine", "torch", "--model-path", "/students/a"]
    assert endpoint_command("/students/b.gguf")[3:] == ["--engine", "llamacpp", "--model-path", "/students/b.gguf"]
    pointed = with_endpoint_url(config, "http://127.0.0.1:9", models=groups["/students/a"])
    moved = [name for name, model in pointed.models.items() if model.endpoint == "http://127.0.0.1:9"]
    assert moved == ["student-a", "student-a-long"]
    assert pointed.models["student-a"].weights is None and pointed.models["student-b"].weights == "/students/b.gguf"


def test_weights_belong_to_local_endpoint_models_and_must_exist(tmp_path: Path) -> None:
    import contextlib

    from llm_gateway.cli.supervisor import start_local_endpoints
    from llm_gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="served by the local endpoint only"):
        parse_config("models: {m: {provider: echo, weights: /w}}\ntenants: {t: {routes: {d: {model: m}}}}\n")
    with pytest.raises(ConfigError, match="served by the local endpoint only"):
        parse_config(
            "models: {m: {provider: sagemaker, endpoint: my-endpoint, weights: /w}}\n"
            "tenants: {t: {routes: {d: {model: m}}}}\n"
        )
    missing = str(tmp_path / "gone")
    config = parse_config(
        f"models: {{m: {{provider: sagemaker, endpoint: local, weights: {missing}}}}}\n"
        "tenants: {t: {routes: {d: {model: m}}}}\n"
    )
    with contextlib.ExitStack() as stack, pytest.raises(ConfigError, match=f"model m: weights {missing} do not exist"):
        start_local_endpoints(config, stack)


def test_purge_command_removes_the_tenants_cached_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_gateway.adapters.local.sqlite import SqliteStore
    from llm_gateway.contracts import AssistantMessage, ChatCompletion, Choice, Usage

    db = tmp_path / "gw.db"
    config = tmp_path / "gw.yaml"
    config.write_text(EXAMPLE_CONFIG.read_text().replace(".llm-gateway/gateway.db", str(db)))
    answer = ChatCompletion(
        id="c",
        created=0,
        model="echo",
        usage=Usage(),
        choices=[Choice(message=AssistantMessage(content="x"), finish_reason="stop")],
    )
    store = SqliteStore(db)
    store.put("k1", "acme", "echo", answer, expires_at=10**12)
    store.put("k2", "globex", "echo", answer, expires_at=10**12)
    store.close()
    assert main(["purge", "--config", str(config), "--tenant", "acme"]) == 0
    assert "purged 1 cached answers of tenant acme" in capsys.readouterr().out
    store = SqliteStore(db)
    assert store.get("k1", 0) is None and store.get("k2", 0) is not None
    assert main(["purge", "--config", str(config), "--tenant", "nobody"]) == 2
    # By knowledge-base version and by system prompt: only the tagged entries go
    store.put("kb1", "globex", "echo", answer, expires_at=10**12, tags=(kb_tag("v1"),))
    store.put("sp1", "globex", "echo", answer, expires_at=10**12, tags=(prompt_tag("Be brief."),))
    store.close()
    assert main(["purge", "--config", str(config), "--tenant", "globex", "--kb-version", "v1"]) == 0
    assert "purged 1 cached answers of tenant globex, knowledge-base version v1" in capsys.readouterr().out
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Be brief.")
    assert main(["purge", "--config", str(config), "--tenant", "globex", "--system-prompt-file", str(prompt_file)]) == 0
    assert f"system prompt {prompt_tag('Be brief.')}" in capsys.readouterr().out
    store = SqliteStore(db)
    assert store.get("kb1", 0) is None and store.get("sp1", 0) is None and store.get("k2", 0) is not None
