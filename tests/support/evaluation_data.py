"""The Quora question pairs (QQP) some quality tests score against: everyday questions beside hard
requests. The file is evaluation data kept beside the repository, not in it (the questions are
Quora's, released for research); point LLM_GATEWAY_QQP at a copy to run those tests elsewhere.
Without it they are skipped, saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

QQP = Path(
    os.environ.get("LLM_GATEWAY_QQP") or Path(__file__).resolve().parents[3] / "shared" / "data" / "qqp_pairs.jsonl.gz"
)

needs_qqp = pytest.mark.skipif(
    not QQP.is_file(), reason=f"needs the QQP evaluation data at {QQP} (set LLM_GATEWAY_QQP to its path)"
)
