"""Importing the gateway sets numpy's BLAS to one thread (its matrix products are tiny, and BLAS
threads on a busy CPU only add latency), unless the operator set it."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import llm_gateway, numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0]['num_threads'])"


def _blas_threads(env: dict[str, str]) -> int:
    return int(
        subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    )


def test_blas_runs_one_thread_unless_the_operator_says_otherwise() -> None:
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _blas_threads(base) == 1
    assert _blas_threads({**base, "OPENBLAS_NUM_THREADS": "2"}) == 2
