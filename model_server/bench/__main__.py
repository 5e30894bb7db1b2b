"""Decode speed of the torch engine against the memory-bandwidth roofline, side by side in one run.

    python -m model_server.bench [--shape llama-3.2-1b] [--device cuda] [--skip compile,int4,...]

Random weights of a real model's shape (no checkpoint is needed, and the bytes moved per token
are the real ones). Rows, each on the same device in the same run:

- HBM (or DRAM) bandwidth: a large device-to-device copy, bytes read + written per second;
- the roofline: weight bytes per token at that bandwidth (batch 1 reads every weight once);
- plain `transformers` generate at batch 1 (the baseline);
- the engine at batch 1: bf16 with CUDA graphs, + torch.compile, int8 and int4 (compiled);
- 64 concurrent requests, continuous batching, aggregate tokens per second;
- a shared prefix (2,048 tokens): first-token time cold and with the prefix cache;
- speculative decoding, prompt lookup, on a copy-heavy request with the packaged SmolLM2
  (real weights: drafts need a model that copies; on the CPU, where SmolLM2 runs).

Without a GPU it runs on the CPU with smaller counts (`--quick` is implied), which checks the
paths, not the speeds. Prints a Markdown table, a row as soon as it is measured (with the
seconds its section took); `--json FILE` also writes the rows, rewritten after each.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..torch_engine.decode import DecodeCore, Generation, Sequence
from ..torch_engine.model import SHAPES, Llama, LlamaShape, random_weights
from ..torch_engine.quant import quantize, weight_bytes
from ..torch_engine.speculative import PromptLookup

SECTIONS = ("baseline", "graphs", "compile", "int8", "int4", "batch", "prefix", "speculative")


@dataclass
class Row:
    name: str
    tok_s: float | None = None
    ttft_ms: float | None = None
    note: str = ""
    roofline_share: float | None = None
    seconds: float | None = None  # wall time of the section that measured it


@dataclass(frozen=True)
class Plan:
    prompt: int
    new_tokens: int
    streams: int
    stream_tokens: int
    prefix: int
    max_len: int


FULL = Plan(prompt=128, new_tokens=256, streams=64, stream_tokens=256, prefix=2048, max_len=512)
QUICK = Plan(prompt=32, new_tokens=24, streams=8, stream_tokens=16, prefix=256, max_len=128)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes per second of a device copy (each byte is read once and written once)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    repeats = 20 if device.type == "cuda" else 5
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - started)


def random_prompt(length: int, vocab: int, seed: int) -> list[int]:
    rng = random.Random(seed)  # noqa: S311 - random token ids, not security
    return [rng.randrange(vocab) for _ in range(length)]


def timed(sequence: Sequence) -> tuple[float, float]:
    """(decode tokens per second after the first token, first-token time in ms)."""
    assert sequence.first_token_at is not None and sequence.finished_at is not None
    decode_s = sequence.finished_at - sequence.first_token_at
    return (len(sequence.generated) - 1) / decode_s, (sequence.first_token_at - sequence.submitted_at) * 1000


def engine_row(name: str, model: Llama, plan: Plan, **options: Any) -> Row:
    core = DecodeCore(model, slots=1, max_len=plan.max_len, min_span=plan.max_len, **options)
    prompt = random_prompt(plan.prompt, model.shape.vocab_size, 1)
    core.generate(Generation(prompt, plan.new_tokens))  # warm-up: capture, compile
    tok_s, ttft = timed(core.run(Generation(prompt, plan.new_tokens)))
    return Row(name, tok_s, ttft)


def graph_rows(engine: str, model: Llama, plan: Plan) -> list[Row]:
    """The engine as served, and (on CUDA) with the host waiting for every token instead of once
    per burst of 8 steps."""
    rows = [engine_row(engine, model, plan)]
    if model.embed.weight.device.type == "cuda":
        rows.append(engine_row(f"{engine}, one step per replay", model, plan, burst=1))
    return rows


def baseline_row(shape: LlamaShape, dtype: torch.dtype, device: torch.device, plan: Plan) -> Row:
    """`transformers`' own generate on the same shape (greedy, every token produced)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fields: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        rope_theta=shape.rope_theta,
        rope_scaling=dict(shape.rope_scaling) if shape.rope_scaling else None,
        tie_word_embeddings=shape.tie_embeddings,
        max_position_embeddings=plan.max_len * 4,
    )
    with torch.device(device):
        model: Any = LlamaForCausalLM(LlamaConfig(**fields))
    model = model.to(dtype).eval()
    ids = torch.tensor([random_prompt(plan.prompt, shape.vocab_size, 1)], device=device)
    options: dict[str, Any] = {"do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **options)
        synchronize(device)
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=plan.new_tokens, min_new_tokens=plan.new_tokens, **options)
        synchronize(device)
    elapsed = time.perf_counter() - started
    del model
    return Row("plain transformers generate", (out.shape[1] - ids.shape[1]) / elapsed, note="includes prefill")


def batch_row(model: Llama, plan: Plan, compile: bool) -> Row:
    core = DecodeCore(model, slots=plan.streams, max_len=plan.max_len, min_span=plan.max_len, compile=compile)
    prompts = [random_prompt(plan.prompt, model.shape.vocab_size, 10 + i) for i in range(plan.streams)]
    # Warm-up at full batch, then the measured run: every request joins at once and streams.
    for _ in range(2):
        started = time.perf_counter()
        sequences = [core.submit(Generation(p, plan.stream_tokens)) for p in prompts]
        while any(s.finish is None for s in sequences):
            core.step()
        elapsed = time.perf_counter() - started
    tokens = sum(len(s.generated) for s in sequences)
    ttft = sorted((s.first_token_at or 0) - s.submitted_at for s in sequences)[len(sequences) // 2] * 1000
    return Row(
        f"{plan.streams} concurrent requests (aggregate, incl. prefill)",
        tokens / elapsed,
        ttft,
        note="second of two runs; median first token",
    )


def prefix_rows(model: Llama, plan: Plan) -> list[Row]:
    max_len = plan.prefix + 256
    core = DecodeCore(model, slots=2, max_len=max_len, prefix_blocks=(plan.prefix // 16) * 4 + 64)
    shared = random_prompt(plan.prefix, model.shape.vocab_size, 3)
    rows = []
    for label, salt, question in (
        ("cold", "tenant-a", 1),
        ("warm-up", "tenant-a", 2),
        ("reused", "tenant-a", 3),
        ("other tenant", "tenant-b", 4),
    ):
        prompt = shared + random_prompt(16, model.shape.vocab_size, 100 + question)
        sequence = core.run(Generation(prompt, 2, salt=salt))
        ttft = first_token_ms(sequence)
        if label != "warm-up":
            rows.append(
                Row(
                    f"{plan.prefix}-token shared prefix, {label}",
                    None,
                    ttft,
                    note=f"{sequence.reused_positions} positions reused",
                )
            )
    cold, reused = rows[0].ttft_ms, rows[1].ttft_ms
    if cold and reused:
        rows[1].note += f"; {cold / reused:.1f}x faster than cold"
    return rows


def first_token_ms(sequence: Sequence) -> float:
    assert sequence.first_token_at is not None
    return (sequence.first_token_at - sequence.submitted_at) * 1000


COPY_TASK = "Copy this code exactly, without changes:\n\n" + "\n".join(
    f'def scale_{name}(values, factor):\n    """Multiply every {name} value by factor."""\n'
    f"    return [value * factor for value in values]\n"
    for name in ("price", "weight", "height", "width", "length")
)


def speculative_rows(new_tokens: int) -> list[Row]:
    """Prompt lookup on the packaged SmolLM2 (CPU): same greedy tokens, fewer model steps."""
    from ..torch_engine.engine import load_checkpoint

    model, tokenizer = load_checkpoint(None, torch.float32, torch.device("cpu"))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": COPY_TASK}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = frozenset(model.shape.eos_token_ids)
    results = {}
    for name, drafter in (("plain", None), ("prompt lookup", PromptLookup())):
        core = DecodeCore(copy.deepcopy(model), slots=1, max_len=1024, eos_tokens=eos, drafter=drafter)
        core.generate(Generation(prompt, 8))
        sequence = core.run(Generation(prompt, new_tokens))
        elapsed = (sequence.finished_at or 0) - sequence.submitted_at
        results[name] = (sequence, len(sequence.generated) / elapsed, core.steps)
    plain, spec = results["plain"], results["prompt lookup"]
    same = plain[0].generated == spec[0].generated
    accepted = f"{spec[0].accepted}/{spec[0].proposed} drafted tokens accepted"
    return [
        Row("SmolLM2-135M (CPU, fp32) copy task, plain", plain[1], note=f"{len(plain[0].generated)} tokens"),
        Row(
            "SmolLM2-135M (CPU, fp32) copy task, prompt lookup",
            spec[1],
            note=f"{spec[1] / plain[1]:.2f}x; output identical: {same}; {accepted}",
        ),
    ]


def measure(shape_name: str, device: torch.device, skip: set[str], quick: bool) -> tuple[dict[str, Any], Iterator[Row]]:
    """The run's description, and its rows as each is measured (a run cut short keeps what it has)."""
    plan = QUICK if quick else FULL
    shape = SHAPES[shape_name]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "shape": shape_name,
        "dtype": _dtype_name(dtype),
        "plan": asdict(plan),
    }

    def rows() -> Iterator[Row]:
        started = time.perf_counter()
        bytes_per_s = bandwidth(device, 2048 if device.type == "cuda" else 256)
        model = random_weights(shape, dtype, device)
        weights = weight_bytes(model)
        roofline = bytes_per_s / weights
        yield Row("memory bandwidth (copy)", note=f"{bytes_per_s / 1e12:.2f} TB/s")
        yield Row(
            "roofline, batch 1",
            roofline,
            note=f"{weights / 1e9:.2f} GB of weights per token",
            seconds=time.perf_counter() - started,
        )
        engine = f"engine, {_dtype_name(dtype)}" + (", CUDA graphs" if device.type == "cuda" else "")
        sections: list[tuple[str, Callable[[], list[Row]]]] = [
            ("baseline", lambda: [baseline_row(shape, dtype, device, plan)]),
            ("graphs", lambda: graph_rows(engine, model, plan)),
            ("compile", lambda: [engine_row(f"{engine}, compiled", model, plan, compile=True)]),
            ("int8", lambda: [quantized_row("int8", model, plan, roofline_bytes=weights)]),
            ("int4", lambda: [quantized_row("int4", model, plan, roofline_bytes=weights)]),
            ("batch", lambda: [batch_row(model, plan, compile="compile" not in skip)]),
            ("prefix", lambda: prefix_rows(model, plan)),
            ("speculative", lambda: speculative_rows(plan.new_tokens * 4 if quick else 200)),
        ]
        for name, section in sections:
            if name in skip:
                continue
            started = time.perf_counter()
            try:
                measured = section()
            except Exception as exc:  # one failed section must not cost the others' numbers
                measured = [Row(f"{name}: failed", note=f"{type(exc).__name__}: {str(exc)[:160]}")]
            measured[-1].seconds = time.perf_counter() - started
            for row in measured:
                if row.tok_s is not None and row.name.startswith(("engine", "plain", "int")):
                    row.roofline_share = row.tok_s / roofline
                yield row

    return info, rows()


def quantized_row(kind: str, model: Llama, plan: Plan, roofline_bytes: int) -> Row:
    quantized = copy.deepcopy(model)
    kernels = quantize(quantized, kind)
    compile = quantized.embed.weight.device.type == "cuda"
    row = engine_row(f"{kind} weight-only" + (", compiled" if compile else ""), quantized, plan, compile=compile)
    row.note = f"kernels {kernels}; {weight_bytes(quantized) / roofline_bytes:.2f} of the unquantized bytes"
    return row


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def header(info: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"# torch engine on {info['device']} (torch {info['torch']}, {info['shape']}, {info['dtype']}, "
            f"prompt {info['plan']['prompt']}, {info['plan']['new_tokens']} new tokens)",
            "",
            "| measurement | tok/s | first token ms | of roofline | note | s |",
            "|---|---|---|---|---|---|",
        ]
    )


def line(row: Row) -> str:
    tok_s = f"{row.tok_s:,.0f}" if row.tok_s is not None else ""
    ttft = f"{row.ttft_ms:,.1f}" if row.ttft_ms is not None else ""
    share = f"{row.roofline_share:.1%}" if row.roofline_share is not None else ""
    seconds = f"{row.seconds:.0f}" if row.seconds is not None else ""
    return f"| {row.name} | {tok_s} | {ttft} | {share} | {row.note} | {seconds} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_server.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default llama-3.2-1b (GPU), tiny (CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip", default="", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="small counts (implied on the CPU)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    shape = args.shape or ("llama-3.2-1b" if device.type == "cuda" else "tiny")
    info, rows = measure(shape, device, skip, quick=args.quick or device.type != "cuda")
    print(header(info), flush=True)
    done: list[Row] = []
    for row in rows:
        print(line(row), flush=True)
        done.append(row)
        if args.json:  # rewritten after every row
            args.json.write_text(json.dumps({"info": info, "rows": [asdict(r) for r in done]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
