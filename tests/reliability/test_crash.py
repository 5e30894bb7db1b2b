"""SIGKILL under load: the store stays intact and every answered request keeps its records.

`llm-gateway serve` runs as a subprocess on its own SQLite store (exact cache, usage, audit,
budgets, semantic index) with the zero-latency `echo` model and the semantic cache on. Eight
clients load it with plain and streamed requests; after a while the server is killed with SIGKILL
mid-load. Then: `PRAGMA integrity_check` is ok, every request the client saw answered completely
(a JSON body, or a stream through `[DONE]`) has its audit row (and its usage row when a model was
paid), the server starts again on the same store and serves, and answers stored before the crash
are served from the cache after it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from llm_gateway.config import hash_key

KEY = "sk-test-crash"
CLIENTS = 8
LOAD_S = 3.0

CONFIG = f"""
storage_path: STORE_PATH
cache: {{enabled: true, ttl_s: 3600}}
models:
  echo:
    provider: echo
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]
    routes:
      default: {{model: echo}}
    rate_limit: {{requests_per_minute: 600000, burst: 100000}}
    budgets:
      - {{scope: tenant, period: day, usd: 1000}}
    semantic_cache: {{enabled: true, target_precision: 0.90}}
    guards:
      pii: {{enabled: true, default: mask}}
"""


def _serve(config: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "LLM_GATEWAY_CONFIG": str(config)}
    command = [sys.executable, "-m", "llm_gateway.cli.main", "serve", "--port", "0", "--config", str(config)]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith("ready "):
            threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
            return process, line.split()[1].removesuffix("/v1")
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"serve did not become ready (exit code {process.poll()})")


def _load(url: str, stop: threading.Event, answered: list[tuple[str, str]], worker: int) -> None:
    """Ask until stopped; record (request id, question) of each request answered completely."""
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
        n = 0
        while not stop.is_set():
            n += 1
            question = f"Worker {worker} asks question number {n % 40}: what is {n % 40} plus {worker}?"
            body = {"model": "default", "messages": [{"role": "user", "content": question}]}
            try:
                if n % 3 == 0:
                    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                        lines = list(response.iter_lines())
                        if response.status_code == 200 and lines and lines[-1] == "data: [DONE]":
                            answered.append((response.headers["x-request-id"], question))
                else:
                    response = client.post("/v1/chat/completions", json=body)
                    if response.status_code == 200 and response.json()["choices"][0]["message"]["content"]:
                        answered.append((response.headers["x-request-id"], question))
            except (httpx.HTTPError, json.JSONDecodeError, KeyError):
                continue  # cut by the kill: not answered


def test_sigkill_under_load_loses_no_answered_request(tmp_path: Path) -> None:
    store = tmp_path / "store" / "gateway.db"
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.replace("STORE_PATH", str(store)))
    process, url = _serve(config, tmp_path)
    answered: list[tuple[str, str]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(url, stop, answered, w)) for w in range(CLIENTS)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(LOAD_S)
        process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        process.wait(timeout=10)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        if process.poll() is None:
            process.kill()
    assert len(answered) >= 50, f"the load did not get going ({len(answered)} answered)"
    print(f"{len(answered)} requests answered before the kill")

    db = sqlite3.connect(store)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        audited = {row[0]: row[1] for row in db.execute("SELECT request_id, outcome FROM audit")}
        billed = {row[0] for row in db.execute("SELECT request_id FROM usage")}
    finally:
        db.close()
    missing = [rid for rid, _ in answered if rid not in audited]
    assert missing == [], f"{len(missing)} answered requests have no audit row"
    unbilled = [rid for rid, _ in answered if audited[rid] == "ok" and rid not in billed]
    assert unbilled == [], f"{len(unbilled)} answered requests have no usage row"

    # The server starts again on the same store, and what it stored before the crash is served.
    process, url = _serve(config, tmp_path)
    try:
        _request_id, question = answered[0]
        response = httpx.post(
            url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "default", "messages": [{"role": "user", "content": question}]},
            timeout=30,
        )
        assert response.status_code == 200
        assert response.headers["x-gateway-cache"] in ("exact", "semantic")
    finally:
        process.terminate()
        process.wait(timeout=30)
