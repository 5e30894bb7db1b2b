"""The `torch` engine: the endpoint contract over `DecodeCore` (GPU first, runs on the CPU too).

Text in, text out: the model's chat template turns messages into prompt tokens; generated
tokens are decoded incrementally, holding back an incomplete character or the start of a stop
string until the next tokens settle it. Requests from any number of server threads share one
`DecodeCore` running in the background (continuous batching). A stream that is closed early
cancels its request at the next step.

Model sources (`model_path`):
- a Hugging Face checkpoint directory (config.json, safetensors, tokenizer files);
- a GGUF file (dequantized by `transformers`; the tokenizer comes from the file);
- nothing: the packaged SmolLM2-135M-Instruct GGUF, as the llama.cpp engine serves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llm_gateway.endpoint_contract import (
    EndpointFinish,
    EndpointUsage,
    InvocationRequest,
    InvocationResponse,
    StreamEvent,
)

from ..engines.base import EngineInputError, EngineUnavailable
from ..engines.packaged import PACKAGED_MODEL_ID, packaged_model_path
from .decode import DecodeCore, Generation, Sequence
from .model import Llama, LlamaShape, load_hf_state_dict
from .quant import QUANTIZATIONS, quantize
from .speculative import Drafter, DraftModel, PromptLookup

SPECULATIVE_MODES = ("none", "prompt_lookup", "draft")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise EngineUnavailable(f"unknown dtype {name!r} (one of auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def load_checkpoint(path: Path | None, dtype: torch.dtype, device: torch.device) -> tuple[Llama, Any]:
    """(model, tokenizer) from a checkpoint directory, a GGUF file, or the packaged GGUF."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise EngineUnavailable("engine 'torch' needs transformers: pip install 'llm-gateway[gpu]'") from exc
    if path is None:
        path = packaged_model_path()
    if not path.exists():
        raise EngineUnavailable(f"model not found: {path}")
    source, options = (str(path.parent), {"gguf_file": path.name}) if path.is_file() else (str(path), {})
    try:
        config = AutoConfig.from_pretrained(source, **options)
        if config.model_type != "llama":
            raise EngineUnavailable(f"engine 'torch' serves Llama-family models, not {config.model_type!r}")
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        reference = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"cannot load model {path}: {exc}") from exc
    shape = LlamaShape.from_hf_config(config.to_dict())
    eos = set(shape.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    shape = dataclasses.replace(shape, eos_token_ids=tuple(sorted(eos)))
    model = load_hf_state_dict(shape, reference.state_dict(), dtype).to(device)
    del reference
    return model, tokenizer


class TorchEngine:
    """An `Engine` on the own decode loop; loads the model in the constructor."""

    name = "torch"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        slots: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str = "none",
        speculative: str = "none",
        draft_model_path: str | Path | None = None,
        draft_tokens: int = 8,
        prefix_cache_blocks: int = 0,
        compile: bool = False,
    ) -> None:
        if quantization not in QUANTIZATIONS:
            raise EngineUnavailable(f"unknown quantization {quantization!r} (one of {', '.join(QUANTIZATIONS)})")
        if speculative not in SPECULATIVE_MODES:
            raise EngineUnavailable(f"unknown speculative mode {speculative!r} (one of {', '.join(SPECULATIVE_MODES)})")
        if speculative == "draft" and draft_model_path is None:
            raise EngineUnavailable("speculative 'draft' needs a draft model (MODEL_SERVER_DRAFT_MODEL_PATH)")
        if n_threads:
            torch.set_num_threads(n_threads)
        self.device = _device(device)
        self.dtype = _dtype(dtype, self.device)
        path = Path(model_path) if model_path is not None else None
        model, self.tokenizer = load_checkpoint(path, self.dtype, self.device)
        self.model_id = model_id or (path.stem.lower() if path is not None else PACKAGED_MODEL_ID)
        self.kernels = quantize(model, quantization)
        self.quantization = quantization
        drafter: Drafter | None = None
        if speculative == "prompt_lookup":
            drafter = PromptLookup()
        elif speculative == "draft":
            draft, _ = load_checkpoint(Path(str(draft_model_path)), self.dtype, self.device)
            draft.allocate_cache(slots, n_ctx)
            drafter = DraftModel(draft)
        self.core = DecodeCore(
            model,
            slots=slots,
            max_len=n_ctx,
            eos_tokens=frozenset(model.shape.eos_token_ids),
            drafter=drafter,
            draft_tokens=draft_tokens,
            prefix_blocks=prefix_cache_blocks,
            compile=compile,
        )
        self.core.start()

    def _prompt(self, req: InvocationRequest) -> list[int]:
        if req.json_mode:
            raise EngineInputError("engine 'torch' has no JSON mode; use the llamacpp engine", param="json_mode")
        messages = [m.model_dump() for m in req.messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _submit(self, req: InvocationRequest) -> Sequence:
        prompt = self._prompt(req)
        generation = Generation(
            prompt=prompt,
            max_new_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            salt=req.cache_salt if req.cache_salt is not None else "",
        )
        try:
            return self.core.submit(generation)
        except ValueError as exc:
            raise EngineInputError(str(exc), param="messages") from exc

    def stream(self, req: InvocationRequest) -> Iterator[StreamEvent]:
        """Deltas as tokens settle, then one event with `finish_reason` and `usage`."""
        sequence = self._submit(req)
        stops = list(req.stop)
        text = Detokenizer(self.tokenizer)
        sent = ""
        finish: EndpointFinish | None = None
        try:
            for tokens in sequence.stream():
                full = text.add(tokens)
                cut = _first_stop(full, stops)
                if cut is not None:
                    full, finish = full[:cut], "stop"
                    sequence.cancel()
                settled = full if finish else _settled(full, stops)
                if len(settled) > len(sent):
                    yield StreamEvent(delta=settled[len(sent) :])
                    sent = settled
                if finish:
                    break
            if finish is None:
                if sequence.finish == "error":
                    raise RuntimeError(f"generation failed: {sequence.error}")
                full = text.flush()
                if len(full) > len(sent):
                    yield StreamEvent(delta=full[len(sent) :])
                finish = "length" if sequence.finish == "length" else "stop"
        finally:
            sequence.cancel()
        usage = EndpointUsage(prompt_tokens=len(sequence.generation.prompt), completion_tokens=len(sequence.generated))
        yield StreamEvent(finish_reason=finish, usage=usage)

    def generate(self, req: InvocationRequest) -> InvocationResponse:
        """Answer the request in one piece."""
        parts: list[str] = []
        last = StreamEvent()
        for event in self.stream(req):
            parts.append(event.delta)
            last = event
        assert last.finish_reason is not None and last.usage is not None
        return InvocationResponse(
            text="".join(parts), finish_reason=last.finish_reason, usage=last.usage, model=self.model_id
        )

    def close(self) -> None:
        """Stop the decode thread; the engine is unusable afterwards."""
        self.core.stop()


class Detokenizer:
    """The text of a growing list of tokens, by `tokenizers`' `DecodeStream` (each token's new text
    from a short window of the tokens before it; a token that ends inside a character adds nothing
    until the character is complete). `flush` adds what an incomplete last character decodes to, so
    the final text is the whole list's decode."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers.decoders import DecodeStream

        if getattr(tokenizer, "clean_up_tokenization_spaces", False):
            raise ValueError("the checkpoint's tokenizer cleans up spaces after decoding, which a stream cannot do")
        self._backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # transformers' fast tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self.ids: list[int] = []
        self.text = ""
        self._complete = 0  # tokens whose text is all in `text`

    def add(self, ids: list[int]) -> str:
        for token in ids:
            self.ids.append(token)
            piece = self._stream.step(self._backend, token)
            if piece is not None:
                self.text += piece
                self._complete = len(self.ids)
        return self.text

    def flush(self) -> str:
        """The text with every token in, an incomplete last character included."""
        if self._complete < len(self.ids):
            whole: str = self._backend.decode(self.ids, skip_special_tokens=True)
            if whole.startswith(self.text):
                self.text = whole
            self._complete = len(self.ids)
        return self.text


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _settled(text: str, stops: list[str]) -> str:
    """`text` less what the next tokens may still change: an incomplete character at the end,
    or an ending that begins a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return text[:end]
