"""The distillation pipeline end to end on this machine, on the path users run: a teacher (the
deterministic fake OpenAI server answering support emails, `support_tickets`) answers a few
hundred requests through `llm-gateway serve`; then, each as its own command, `distill collect`
(the newest fifth held out: 60 test cases let the rollout's eval gate confirm the tenant's bar with
a miss or three, where 30 would tolerate one), `distill train --gguf q8_0` (LoRA on the packaged
SmolLM2-135M, two epochs, exported for llama.cpp),
`distill eval` (the student against the teacher on the held-out split, with the untuned packaged
model as the baseline) and `distill register --route` (into the configuration file, and a staged
rollout); and `serve` again, now running the student's endpoint, answers new emails by the
student's name.

`run` returns what each step measured; `tests/e2e/test_distill_pipeline.py` asserts on it and
`bench/distill_e2e.py` prints it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from llm_gateway.config import hash_key

from .fake_providers import Behaviour, Script, fake_server, ok
from .support_tickets import Teacher, Ticket, tickets

KEY = "sk-distill-pipeline"
STUDENT = "support-student-v1"
PACKAGED = "smollm2-135m-instruct-q4_1"
CLI = [sys.executable, "-m", "llm_gateway.cli.main"]


def write_config(folder: Path, teacher_url: str) -> Path:
    """The tenant's configuration: the teacher (a hosted model whose terms allow training on its
    outputs) on route `support`, the packaged model on the local endpoint, content kept in traces,
    training opted in."""
    path = folder / "gateway.yaml"
    path.write_text(
        f"""# The distillation pipeline's configuration (written by tests/support/distill_pipeline.py).
storage_path: {folder / "gateway.db"}
models:
  teacher:
    provider: openai
    provider_model: gpt-teacher-2026-01-01
    base_url: {teacher_url}
    api_key_env: FAKE_TEACHER_KEY
    price: {{input_per_mtok: 2.5, output_per_mtok: 10.0}}
    allows_training: true  # the operator's statement about the provider's terms
  {PACKAGED}:
    provider: sagemaker
    endpoint: local
    timeout_s: 120
    default_max_tokens: 128
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.08}}
tenants:
  acme:
    api_keys: [{{id: pipeline, sha256: {hash_key(KEY)}}}]
    allowed_models: [{PACKAGED}]
    routes:
      support: {{model: teacher}}
    traces: {{store_content: true}}
    training: {{opt_in: true}}
""",
        encoding="utf-8",
    )
    return path


def _teacher(teacher: Teacher) -> Callable[[Any], Behaviour]:
    def respond(body: Any) -> Behaviour:
        answer = teacher.answer(body)
        prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
        return ok(answer, prompt_tokens=prompt, completion_tokens=max(1, len(answer) // 4))

    return respond


@contextmanager
def serving(config: Path, env: dict[str, str], timeout_s: float = 300) -> Iterator[str]:
    """`llm-gateway serve --config CONFIG` on a free port; its /v1 base URL once ready."""
    command = [*CLI, "serve", "--port", "0", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_s
        url = ""
        for line in process.stdout:
            if line.startswith("ready "):
                url = line.split()[1]
                break
            if time.monotonic() > deadline:
                break
        if not url:
            raise RuntimeError(f"serve did not become ready (exit code {process.poll()})")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finished(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """An `llm-gateway` command, run to its end whatever its exit code."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=1200, check=False)


def command(env: dict[str, str], *args: str) -> str:
    """An `llm-gateway` command; its standard output (RuntimeError with its stderr if it fails)."""
    done = finished(env, *args)
    if done.returncode != 0:
        raise RuntimeError(f"llm-gateway {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def misses(evaluated: Path, run: str) -> list[dict[str, str]]:
    """The cases a run of `distill eval` failed: its answer and why (what a failed assertion shows)."""
    found = json.loads((evaluated / run / "report.json").read_text(encoding="utf-8"))
    return [{"answer": r["answer"], "detail": r["detail"]} for r in found["results"] if not r["passed"]]


def _ask(client: openai.OpenAI, model: str, ticket: Ticket) -> str:
    answer = client.chat.completions.create(
        model=model,
        messages=ticket.messages(),  # type: ignore[arg-type]
        temperature=0,
        max_tokens=128,
    )
    return answer.choices[0].message.content or ""


def same_fields(reply: str, ticket: Ticket) -> bool:
    """The reply is the ticket's fields as a JSON object."""
    try:
        return bool(json.loads(reply) == ticket.truth)
    except ValueError:
        return False


def run(
    workdir: Path, requests: int = 300, epochs: int = 2, probes: int = 10, split: str = "70,10,20"
) -> dict[str, Any]:
    """The whole loop in `workdir`; what each step measured and how long it took."""
    made = tickets(requests + probes, seed=7)
    traffic, unseen = made[:requests], made[requests:]
    timings: dict[str, float] = {}
    found: dict[str, Any] = {"timings_s": timings}
    env = {**os.environ, "FAKE_TEACHER_KEY": "sk-fake-teacher", "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.monotonic()
    with fake_server("openai", Script(responder=_teacher(Teacher(made)))) as upstream:
        config = write_config(workdir, upstream.base_url)
        with serving(config, env) as url:
            client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=2, timeout=120)
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda t: _ask(client, "support", t), traffic))
            right = sum(same_fields(a, t) for a, t in zip(answers, traffic, strict=True))
            found["traffic"] = {"requests": len(traffic), "teacher_right": right}
        timings["traffic"] = time.monotonic() - started

        step = time.monotonic()
        data, student, evaluated = workdir / "data", workdir / "student", workdir / "eval"
        collect = ["distill", "collect", "--tenant", "acme", "--route", "support", "--since", "1d"]
        collect += ["--split", split, "--out", str(data), "--config", str(config)]
        found["collect"] = json.loads(command(env, *collect))
        timings["collect"] = time.monotonic() - step

        step = time.monotonic()
        train = ["distill", "train", str(data), "--out", str(student), "--epochs", str(epochs), "--gguf", "q8_0"]
        found["train"] = json.loads(command(env, *train, "--config", str(config)))
        timings["train"] = time.monotonic() - step

        step = time.monotonic()
        # the GGUF file: the llama.cpp engine serves it about twice as fast as the checkpoint on a CPU
        evaluate = ["distill", "eval", str(data), "--student", str(student / "student.gguf"), "--name", STUDENT]
        evaluate += ["--baseline", PACKAGED, "--baseline-limit", "30"]  # the untuned model: slow, and 0/30 says it
        command(env, *evaluate, "--out", str(evaluated), "--config", str(config))
        found["eval"] = json.loads((evaluated / "report.json").read_text(encoding="utf-8"))
        found["student_misses"] = misses(evaluated, "student")
        timings["eval"] = time.monotonic() - step

        step = time.monotonic()
        register = ["distill", "register", str(evaluated), "--config", str(config), "--route", "support"]
        registered = finished(env, *register)  # exit code 2: registered, but the rollout's eval gate refused
        found["register"] = {"exit": registered.returncode, "out": registered.stdout, "err": registered.stderr}
        found["config"] = config.read_text(encoding="utf-8")
        timings["register"] = time.monotonic() - step

        if registered.returncode not in (0, 2):
            return found  # not registered: nothing to serve
        step = time.monotonic()
        with serving(config, env) as url:
            client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=2, timeout=120)
            replies = [_ask(client, STUDENT, t) for t in unseen]
            found["health"] = httpx.get(url.removesuffix("/v1") + "/healthz", timeout=10).json()
        found["served"] = {
            "asked": len(unseen),
            "right": sum(same_fields(reply, t) for reply, t in zip(replies, unseen, strict=True)),
            "replies": replies,
        }
        timings["serve"] = time.monotonic() - step
    timings["total"] = time.monotonic() - started
    return found
