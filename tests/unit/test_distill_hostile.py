"""`llm-gateway distill` given what a careless or hostile operator gives it: a tampered eval folder,
a configuration file laid out or stored unusually (CRLF, a symlink, a strict mode, not UTF-8,
changed while the command runs), a collection whose lines are not conversations, arguments that
would loop or silently evaluate the wrong model, weights the endpoint cannot serve, a checkpoint
that is not the packaged model's. Each is refused in one line (exit 2) or a typed exception, and
a refused registration leaves the configuration file byte for byte as it was."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.cli.main import main
from llm_gateway.config import load_config, parse_config
from llm_gateway.distill.evaluate import weights_digest
from llm_gateway.errors import ConfigError

CONFIG = """# the operator's file
models:
  teacher: {{provider: echo, allows_training: true}}
tenants:
  acme:
    demo: true
    routes:
      support: {{model: teacher}}
    training: {{opt_in: true, min_quality_ratio: 0.8}}
storage_path: {root}/gateway.db
"""


def distill(*args: str | Path) -> int:
    return main(["distill", *(str(a) for a in args)])


@pytest.fixture
def evaluated(tmp_path: Path) -> dict[str, Any]:
    """A configuration and a local student's eval folder as `distill eval` writes them (met its bar)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    weights = tmp_path / "student"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"weights")
    folder = tmp_path / "eval"
    for run, target in (("teacher", "support"), ("student", "student-v1")):
        (folder / run).mkdir(parents=True)
        (folder / run / "report.json").write_text(json.dumps({"results": [], "target": target, "suite": "s"}))
    summary = {
        "name": "student-v1",
        "tenant": "acme",
        "quality_ratio": 0.95,
        "model": {"provider": "sagemaker", "endpoint": "local", "weights": str(weights), "lifecycle": "candidate"},
        "weights_sha256": weights_digest(weights),
        "runs": {"teacher": {"pass_rate": 1.0}},
    }
    (folder / "report.json").write_text(json.dumps(summary))
    return {"config": config, "eval": folder, "summary": summary, "root": tmp_path}


def tamper(evaluated: dict[str, Any], **changes: Any) -> None:
    (evaluated["eval"] / "report.json").write_text(json.dumps({**evaluated["summary"], **changes}))


@pytest.mark.parametrize(
    ("changes", "extra", "said"),
    [
        ({"quality_ratio": float("nan")}, (), "quality_ratio nan is not a number"),
        ({"quality_ratio": True}, (), "quality_ratio True is not a number"),
        ({"name": None}, (), "the student's name None is not a model name"),
        ({"name": "a\nb: {provider: openai}"}, (), "is not a model name"),
        ({"name": "support"}, (), "the tenant has a route named support"),
        ({"model": {"provider": "echo", "lifecycle": "live"}}, (), "lifecycle is live, not candidate"),
        ({"model": {"provider": "echo", "lifecycle": "candidate", "allows_training": True}}, (), "never a teacher"),
        ({"model": ["echo"]}, (), "the student's model is not valid (model: Input should be a valid dictionary"),
        ({"runs": None}, ("--route", "support"), "no teacher's pass rate"),
        ({"runs": {"teacher": {"pass_rate": "all"}}}, ("--route", "support"), "no teacher's pass rate"),
        ({}, ("--route", "support", "--stages", "1,half"), "--stages 1,half: shares in %"),
    ],
)
def test_a_tampered_report_or_a_bad_argument_is_refused_before_the_file_is_touched(
    evaluated: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    extra: tuple[str, ...],
    said: str,
) -> None:
    # Given an eval folder whose report was edited by hand (or a rollout asked for with bad stages)
    tamper(evaluated, **changes)
    before = evaluated["config"].read_bytes()
    # When it is registered, Then it is refused in one line and the file is as it was
    assert distill("register", evaluated["eval"], "--config", evaluated["config"], *extra) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
    assert evaluated["config"].read_bytes() == before


def test_a_huge_report_is_not_read(evaluated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with (evaluated["eval"] / "report.json").open("wb") as file:
        file.truncate(65 * 2**20)  # sparse: a 65 MiB file on disk costs nothing
    assert distill("register", evaluated["eval"], "--config", evaluated["config"]) == 2
    assert "larger than a distill eval's report can be" in capsys.readouterr().err


def test_the_file_keeps_its_line_endings_its_mode_and_its_symlink(evaluated: dict[str, Any]) -> None:
    # Given the configuration written on Windows, readable by its owner only, and reached by a symlink
    real, link = evaluated["root"] / "real.yaml", evaluated["config"]
    real.write_bytes(link.read_bytes().replace(b"\n", b"\r\n"))
    real.chmod(0o600)
    link.unlink()
    link.symlink_to(real)
    assert distill("register", evaluated["eval"], "--config", link) == 0
    # Then the file the link names is edited, the link stays, and so do the mode and the line endings
    assert link.is_symlink() and link.resolve() == real
    assert real.stat().st_mode & 0o777 == 0o600
    text = real.read_bytes()
    assert text.count(b"\n") == text.count(b"\r\n") and b"student-v1" in text
    assert load_config(link).tenants["acme"].allowed_models == ["student-v1"]
    assert [p.name for p in evaluated["root"].iterdir() if p.name.startswith(".")] == []  # no staged file left


def test_a_file_changed_while_registering_is_not_overwritten(
    evaluated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_gateway.distill import register as module

    config, edit = evaluated["config"], module.register

    def meanwhile(text: str, *args: Any) -> str:  # the operator saves the file while the edit is made
        config.write_text(text + "# the operator's own change\n")
        return edit(text, *args)

    monkeypatch.setattr(module, "register", meanwhile)
    assert distill("register", evaluated["eval"], "--config", config) == 2
    assert "changed while the student was being registered: nothing written" in capsys.readouterr().err
    assert config.read_text().endswith("# the operator's own change\n") and "student-v1" not in config.read_text()


def test_a_file_that_cannot_be_written_beside_is_one_line(
    evaluated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_gateway.distill import register as module

    def read_only(*args: Any, **kwargs: Any) -> Any:  # a folder only root may write, as /etc
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(module.tempfile, "mkstemp", read_only)
    before = evaluated["config"].read_bytes()
    assert distill("register", evaluated["eval"], "--config", evaluated["config"]) == 2
    assert "cannot write beside it (Permission denied); nothing changed" in capsys.readouterr().err
    assert evaluated["config"].read_bytes() == before


def test_a_configuration_that_is_not_utf8_is_refused(
    evaluated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    evaluated["config"].write_bytes(evaluated["config"].read_bytes() + "# café\n".encode("latin-1"))
    assert distill("register", evaluated["eval"], "--config", evaluated["config"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


# --------------------------------------------------------------------------- eval and train


def conversation(*messages: Any) -> str:
    return json.dumps({"messages": list(messages)}) + "\n"


GOOD = conversation({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"})


@pytest.fixture
def collection(tmp_path: Path) -> dict[str, Path]:
    """A configuration, a collection of good lines and a provider student (an echo model)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text(GOOD * 12)
    (data / "card.json").write_text(json.dumps({"tenant": "acme", "route": "support"}))
    student = tmp_path / "student"
    student.mkdir()
    (student / "job.json").write_text(json.dumps({"job_id": "j", "model": {"provider": "echo"}}))
    return {"config": config, "data": data, "student": student, "root": tmp_path}


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("[1, 2]\n", "line 2: not a JSON object with a non-empty `messages` list"),
        ("{nope\n", "line 2: not JSON"),
        (conversation("hi", {"role": "assistant", "content": "x"}), "line 2: message 1 is not an object"),
        (conversation({"role": "user"}, {"role": "assistant", "content": "x"}), "line 2: message 1 is not an object"),
        (
            conversation({"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant"}),
            "line 2: message 1",
        ),
        (conversation({"role": "assistant", "content": "x"}), "line 2: no prompt before the answer"),
        (conversation({"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}), "line 2: the last"),
    ],
)
def test_a_test_split_line_that_is_not_a_conversation_is_named(
    collection: dict[str, Path], capsys: pytest.CaptureFixture[str], line: str, said: str
) -> None:
    (collection["data"] / "test.jsonl").write_text(GOOD + line)
    args = ("eval", collection["data"], "--student", collection["student"], "--name", "s1")
    assert distill(*args, "--out", collection["root"] / "e", "--config", collection["config"]) == 2
    err = capsys.readouterr().err
    assert f"test.jsonl {said}" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("card", "args", "said"),
    [
        ({"tenant": "acme", "route": ["support"]}, (), "card.json names no route: say --teacher"),
        ({"tenant": "acme", "route": "support"}, ("--name", "support"), "--name support: tenant acme has a route"),
        ({"tenant": "acme", "route": "support"}, ("--out", "{student}/eval"), "inside --student"),
    ],
)
def test_an_eval_that_would_crash_or_evaluate_the_wrong_model_is_refused(
    collection: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    card: dict[str, Any],
    args: tuple[str, ...],
    said: str,
) -> None:
    # Given a student served from weights (a checkpoint folder), so --out inside it would change them
    (collection["student"] / "job.json").unlink()
    (collection["student"] / "config.json").write_text("{}")
    (collection["data"] / "card.json").write_text(json.dumps(card))
    given = dict(zip(args[::2], (a.format(student=collection["student"]) for a in args[1::2]), strict=True))
    named = {"--name": "s1", "--out": str(collection["root"] / "e"), **given}
    command = ["eval", collection["data"], "--student", collection["student"], "--config", collection["config"]]
    assert distill(*command, *(x for pair in named.items() for x in pair)) == 2
    assert said in capsys.readouterr().err
    assert not (collection["root"] / "e").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--threads", "0"), "--threads is at least 1"),
        (("--provider-model", "teacher", "--poll-s", "0"), "--poll-s and --wait are positive"),
        (("--provider-model", "teacher", "--wait", "-1"), "--poll-s and --wait are positive"),
        (("--provider-model", "teacher", "--gguf", "q8_0"), "--gguf exports a student trained here"),
        (("--provider-model", "teacher"), "holds a fine-tune's job.json already"),
    ],
)
def test_train_arguments_that_would_spin_crash_or_overwrite_are_refused(
    collection: dict[str, Path], capsys: pytest.CaptureFixture[str], args: tuple[str, ...], said: str
) -> None:
    # the student folder holds a former fine-tune's job.json: a provider job's record is never overwritten
    out = ("--out", collection["student"], "--config", collection["config"])
    assert distill("train", collection["data"], *out, *args) == 2
    assert said in capsys.readouterr().err


def test_a_train_split_line_that_is_not_a_conversation_is_refused_before_training(
    collection: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_gateway.distill import train as training

    # training reads the splits as `distill.train.train` does, without loading any model
    monkeypatch.setattr(training, "train", lambda data, out, settings: training.read_split(data / "train.jsonl"))
    (collection["data"] / "train.jsonl").write_text(GOOD + "[1]\n")
    out = ("--out", collection["root"] / "s", "--config", collection["config"])
    assert distill("train", collection["data"], *out) == 2
    assert "train.jsonl line 2: not a JSON object" in capsys.readouterr().err


def test_an_export_that_fails_after_training_is_one_line(
    collection: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_gateway.distill import train as training

    def other_model(data: Path, out: Path, settings: Any) -> dict[str, Any]:  # a checkpoint of another shape
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}))
        return {"epochs": [{"epoch": 1, "validation_loss": 1.0}], "seconds": 0.1}

    monkeypatch.setattr(training, "train", other_model)
    out = collection["root"] / "s"
    assert distill("train", collection["data"], "--out", out, "--gguf", "q8_0", "--config", collection["config"]) == 2
    err = capsys.readouterr().err
    assert "is trained, but not exported as GGUF" in err and "num_hidden_layers is None" in err
    assert not (out / "student.gguf").exists()


# --------------------------------------------------------------------------- weights the endpoint serves


def local_student(weights: Path) -> Any:
    return parse_config(
        f"models: {{student: {{provider: sagemaker, endpoint: local, weights: '{weights}'}}}}\n"
        "tenants: {t: {routes: {d: {model: student}}}}\n"
    )


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.write_bytes(b"GGUF"), "are a file but not a GGUF file (.gguf)"),
        (lambda p: p.mkdir(), "are a folder without config.json (no checkpoint)"),
    ],
)
def test_weights_the_endpoint_cannot_serve_are_refused_before_it_starts(tmp_path: Path, make: Any, said: str) -> None:
    from llm_gateway.cli.supervisor import start_local_endpoints

    weights = tmp_path / "my student"  # a space in the path is fine; the format is not
    make(weights)
    with contextlib.ExitStack() as stack, pytest.raises(ConfigError, match=r"^model student: weights ") as refused:
        start_local_endpoints(local_student(weights), stack)
    assert str(refused.value).endswith(f"my student {said}")


def test_a_gguf_file_named_in_capitals_goes_to_llama_cpp() -> None:
    from llm_gateway.cli.supervisor import endpoint_command

    assert endpoint_command("/students/B.GGUF")[3:5] == ["--engine", "llamacpp"]


# --------------------------------------------------------------------------- the GGUF export and the provider


def packaged_shape(**changes: Any) -> dict[str, Any]:
    shape = {
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
    }
    return {**shape, **changes}


def checkpoint(folder: Path, config: Any, tensors: dict[str, Any] | None = None) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_an_export_of_what_is_not_the_packaged_model_is_a_value_error(tmp_path: Path) -> None:
    import numpy as np

    from llm_gateway.distill.export import export_gguf

    untied = {"model.embed_tokens.weight": np.zeros((2, 2), np.float32), "lm_head.weight": np.ones((2, 2), np.float32)}
    cases = {
        "a list": (checkpoint(tmp_path / "a", [1]), "config.json is not a model configuration"),
        "another vocabulary": (checkpoint(tmp_path / "b", packaged_shape(vocab_size=32000)), "vocab_size is 32000"),
        "no weights": (checkpoint(tmp_path / "c", packaged_shape()), "no readable model.safetensors"),
        "an untied output": (
            checkpoint(tmp_path / "d", packaged_shape(), untied),
            "its output projection is not its token embedding",
        ),
    }
    for folder, said in cases.values():
        with pytest.raises(ValueError, match=said):
            export_gguf(folder, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_an_export_that_fails_while_writing_leaves_no_gguf_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf
    import numpy as np

    from llm_gateway.distill.export import export_gguf

    def disk_full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    folder = checkpoint(tmp_path / "ck", packaged_shape(), {"model.norm.weight": np.ones(576, np.float32)})
    with pytest.raises(OSError, match="No space left"):
        export_gguf(folder, tmp_path / "student.gguf")
    assert os.listdir(tmp_path) == ["ck"]  # neither a half-written student.gguf nor its partial file


def test_a_succeeded_job_without_a_model_is_a_failure() -> None:
    from llm_gateway.distill.provider import FineTuneJob, FineTuningFailed, wait

    class Tuner:
        def status(self, job_id: str) -> FineTuneJob:
            return FineTuneJob(job_id, "succeeded", None)

    with pytest.raises(FineTuningFailed, match="succeeded, but the provider names no fine-tuned model"):
        wait(Tuner(), "ftjob-1", 1.0, 10.0, sleep=lambda s: None)  # type: ignore[arg-type]
