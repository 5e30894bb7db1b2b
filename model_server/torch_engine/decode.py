"""The token-level decoder: continuous batching over a static KV cache, CUDA-graph steps,
speculative decoding and prefix reuse.

`DecodeCore` owns the model and its cache slots. Requests (`Generation`) join at any step: each
is prefilled into a free slot (reusing cached prefix blocks when a prefix cache is on) and then
decoded with every other running request, one token per request per step, until it stops; its
slot is then free for the next. Tokens stream out per request as they are chosen.

One step at a time runs on one thread (`start()` runs it in the background; tests and
benchmarks may call `step()` themselves). A step is:
1. admit waiting requests into free slots, lowest slot first, and prefill them;
2. if exactly one request runs and it decodes greedily with a drafter configured: one
   speculative step (propose, verify in one forward, keep the agreeing prefix);
   otherwise one batched decode step over slots 0..B-1 (B a power of two covering the running
   slots; free slots in that range compute a padding row whose writes land at the cache's last
   position, which no sequence reads before writing it).

On CUDA the one-token step is captured as a CUDA graph per (batch, attention span) bucket and
replayed (greedy batches run `burst` steps per replay, each step's token fed to the next on the
device, so the host waits once per burst); the attention span is the cached length rounded up
to a power of two, so attention reads only the positions in use. `compile=True` runs the step
through `torch.compile` first.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .model import Llama
from .prefix import PrefixCache
from .speculative import Drafter

Finish = Literal["stop", "length", "cancelled", "error"]
MIN_SPAN = 128
PREFILL_TOKENS = 16_384  # padded tokens one batched prefill may hold


@dataclass(frozen=True)
class Generation:
    """A request at the token level."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_tokens: frozenset[int] = frozenset()
    salt: str | None = None  # prefix-cache scope (the tenant); None: no prefix reuse
    speculative: bool = True


@dataclass
class Sequence:
    """A running request: its slot, its tokens, and the queue its events go to."""

    generation: Generation
    slot: int = -1
    tokens: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    finish: Finish | None = None
    error: str | None = None
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    reused_positions: int = 0
    proposed: int = 0
    accepted: int = 0
    generator: torch.Generator | None = None
    events: queue.Queue[tuple[str, object]] = field(default_factory=queue.Queue)

    def cancel(self) -> None:
        """Stop generating at the next step (the consumer went away)."""
        self.cancelled = True

    def stream(self) -> Iterator[list[int]]:
        """Token ids as they are chosen; `finish` is set once this ends."""
        while True:
            kind, value = self.events.get()
            if kind == "tokens":
                yield value  # type: ignore[misc]
            else:
                return

    def wait(self) -> list[int]:
        for _ in self.stream():
            pass
        return self.generated


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class DecodeCore:
    def __init__(
        self,
        model: Llama,
        *,
        slots: int = 8,
        max_len: int = 2048,
        eos_tokens: frozenset[int] = frozenset(),
        drafter: Drafter | None = None,
        draft_tokens: int = 8,
        prefix_blocks: int = 0,
        block_size: int = 16,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        min_span: int = MIN_SPAN,
        burst: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.device = model.embed.weight.device
        model.allocate_cache(slots, max_len)
        self.slots, self.max_len = slots, max_len
        self.min_span = min_span
        # Greedy steps run this many at a time, each feeding the next its token on the device;
        # the host reads them once per burst (on CUDA, one graph replay per burst).
        self.burst = (8 if self.device.type == "cuda" else 1) if burst is None else burst
        self.eos_tokens = eos_tokens
        self.drafter = drafter
        self.draft_tokens = draft_tokens
        self.prefix = PrefixCache(model, prefix_blocks, block_size) if prefix_blocks > 0 else None
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if compile:
            # One compiled graph per (batch, span) bucket: allow them all without falling back.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
        self._step_fn: Callable[..., Tensor] = torch.compile(model, fullgraph=True) if compile else model
        self._graphs: dict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._running: dict[int, Sequence] = {}
        self._waiting: list[Sequence] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0

    # -- requests ---------------------------------------------------------------------------

    def submit(self, generation: Generation) -> Sequence:
        """Queue a request; raises ValueError if it cannot fit the cache."""
        if not generation.prompt:
            raise ValueError("the prompt has no tokens")
        if len(generation.prompt) >= self.max_len:
            raise ValueError(f"the prompt has {len(generation.prompt)} tokens; this endpoint holds {self.max_len - 1}")
        if generation.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        sequence = Sequence(generation, tokens=list(generation.prompt))
        if generation.seed is not None and generation.temperature > 0:
            sequence.generator = torch.Generator(device=self.device).manual_seed(generation.seed)
        with self._lock:
            self._waiting.append(sequence)
            self._lock.notify()
        return sequence

    def run(self, generation: Generation) -> Sequence:
        """Submit and wait until the request ends, stepping on this thread when no background
        thread runs (other waiting requests advance too)."""
        sequence = self.submit(generation)
        if self._thread is None:
            while sequence.finish is None:
                self.step()
        sequence.wait()
        return sequence

    def generate(self, generation: Generation) -> list[int]:
        """The tokens `run` generates."""
        return self.run(generation).generated

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running) + len(self._waiting)

    # -- background thread ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="decode", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._running:
                    self._lock.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception as exc:  # a failed step fails its requests, never the thread
                self._fail_all(f"{type(exc).__name__}: {exc}")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            failed = list(self._running.values()) + self._waiting
            self._running.clear()
            self._waiting.clear()
        for sequence in failed:
            sequence.error = message
            self._finish(sequence, "error")

    # -- one step ---------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> None:
        self._admit()
        with self._lock:
            for slot, sequence in list(self._running.items()):
                if sequence.cancelled:
                    del self._running[slot]
                    self._finish(sequence, "cancelled")
            running = sorted(self._running.values(), key=lambda s: s.slot)
        if not running:
            return
        self.steps += 1
        only = running[0]
        greedy = all(s.generation.temperature == 0 for s in running)
        if len(running) == 1 and self.drafter is not None and only.generation.speculative and greedy:
            self._speculative_step(only)
        elif (
            self.burst > 1
            and greedy
            and not self._waiting  # a waiting request joins at the next step, not after a burst
            and max(len(s.tokens) for s in running) + self.burst < self.max_len
        ):
            self._decode_step(running, self.burst)
        else:
            self._decode_step(running)
        for sequence in running:
            if sequence.finish is not None:
                self._retire(sequence)

    def _retire(self, sequence: Sequence) -> None:
        """Free a finished request's slot, first keeping its conversation's blocks for a next turn
        (every token but the last is in the cache)."""
        salt = sequence.generation.salt
        if self.prefix is not None and salt is not None and sequence.finish in ("stop", "length"):
            self.prefix.store(salt, sequence.tokens[:-1], sequence.slot)
        with self._lock:
            self._running.pop(sequence.slot, None)

    def _admit(self) -> None:
        admitted: list[Sequence] = []
        with self._lock:
            free = [s for s in range(self.slots) if s not in self._running]
            while free and self._waiting:
                sequence = self._waiting.pop(0)
                if sequence.cancelled:
                    self._finish(sequence, "cancelled")
                    continue
                sequence.slot = free.pop(0)
                self._running[sequence.slot] = sequence
                admitted.append(sequence)
        group: list[Sequence] = []
        for sequence in admitted:  # in slot order: prefill neighbours together, within a token budget
            candidate = [*group, sequence]
            rows = candidate[-1].slot - candidate[0].slot + 1
            if group and rows * max(len(s.generation.prompt) for s in candidate) > PREFILL_TOKENS:
                self._prefill(group)
                candidate = [sequence]
            group = candidate
        if group:
            self._prefill(group)
        for sequence in admitted:
            if sequence.finish is not None:
                self._retire(sequence)

    def _prefill(self, group: list[Sequence]) -> None:
        """Prefill the prompts of requests in slots `group[0].slot`..`group[-1].slot` in one
        forward: one row per slot, right-padded; rows and tail padding of other slots write only
        at the cache's last position, which no sequence reads before it writes it."""
        first = group[0].slot
        starts = []
        for sequence in group:
            generation = sequence.generation
            if self.drafter is not None:
                self.drafter.reset(sequence.slot)
            start = 0
            if self.prefix is not None and generation.salt is not None:
                start = self.prefix.load(generation.salt, generation.prompt, sequence.slot)
            sequence.reused_positions = start
            starts.append(start)
        rows = group[-1].slot - first + 1
        length = max(len(s.generation.prompt) - start for s, start in zip(group, starts, strict=True))
        tokens = torch.zeros(rows, length, dtype=torch.long)
        positions = torch.full((rows, length), self.max_len - 1, dtype=torch.long)
        last = torch.zeros(rows, dtype=torch.long)
        for sequence, start in zip(group, starts, strict=True):
            prompt, row = sequence.generation.prompt, sequence.slot - first
            tokens[row, : len(prompt) - start] = torch.tensor(prompt[start:])
            positions[row, : len(prompt) - start] = torch.arange(start, len(prompt))
            last[row] = len(prompt) - start - 1
        from_start = all(start == 0 for start in starts) and rows == len(group)
        span = self._span(max(len(s.generation.prompt) for s in group))
        logits = self.model(
            tokens.to(self.device),
            positions.to(self.device),
            first,
            span,
            pick=last.to(self.device),
            from_start=from_start,
        )[:, 0]
        for sequence in group:
            if self.prefix is not None and sequence.generation.salt is not None:
                self.prefix.store(sequence.generation.salt, sequence.generation.prompt, sequence.slot)
        choices = self._choose(logits[[s.slot - first for s in group]], group)
        for sequence, token in zip(group, choices, strict=True):
            self._emit(sequence, [token])

    def _decode_step(self, running: list[Sequence], burst: int = 1) -> None:
        """One token per running request, or `burst` greedy tokens (a request that stops inside
        the burst keeps only its tokens up to there)."""
        batch = min(self.slots, _power_of_two_at_least(running[-1].slot + 1))
        tokens = [0] * batch
        positions = [self.max_len - 1] * batch
        for sequence in running:
            tokens[sequence.slot] = sequence.tokens[-1]
            positions[sequence.slot] = len(sequence.tokens) - 1
        span = self._span(max(len(s.tokens) for s in running) + burst - 1)
        out = self._run_step(tokens, positions, span, burst)
        if burst == 1:
            chosen = [[token] for token in self._choose(out[[s.slot for s in running]], running)]
        else:
            rows = out.tolist()
            chosen = [rows[s.slot] for s in running]
        for sequence, new in zip(running, chosen, strict=True):
            self._emit(sequence, new)

    def _speculative_step(self, sequence: Sequence) -> None:
        assert self.drafter is not None
        generation = sequence.generation
        room = min(
            generation.max_new_tokens - len(sequence.generated) - 1,
            self.max_len - len(sequence.tokens) - 1,
            self.draft_tokens,
        )
        draft = self.drafter.propose(sequence.slot, sequence.tokens, room) if room > 0 else []
        if not draft:
            self._decode_step([sequence])
            return
        start = len(sequence.tokens) - 1
        tokens = torch.tensor([[sequence.tokens[-1], *draft]], device=self.device)
        positions = torch.arange(start, start + len(draft) + 1, device=self.device)[None]
        logits = self.model(tokens, positions, sequence.slot, self._span(start + len(draft) + 1))
        choices = logits[0].argmax(-1).tolist()
        accepted = 0
        while accepted < len(draft) and draft[accepted] == choices[accepted]:
            accepted += 1
        sequence.proposed += len(draft)
        sequence.accepted += accepted
        self._emit(sequence, choices[: accepted + 1])

    # -- helpers ----------------------------------------------------------------------------

    def _span(self, length: int) -> int:
        return min(self.max_len, max(self.min_span, _power_of_two_at_least(length)))

    def _steps(self, tokens: Tensor, positions: Tensor, span: int, burst: int) -> Tensor:
        """Logits [B, vocab] of one step, or the greedy tokens [B, burst] of `burst` steps, each
        step's token fed to the next on the device (padding rows stay at the last position)."""
        if burst == 1:
            return self._step_fn(tokens, positions, 0, span)[:, 0]
        chosen = []
        for _ in range(burst):
            tokens = self._step_fn(tokens, positions, 0, span)[:, 0].argmax(-1, keepdim=True)
            chosen.append(tokens)
            positions = (positions + 1).clamp(max=self.max_len - 1)
        return torch.cat(chosen, dim=1)

    def _run_step(self, tokens: list[int], positions: list[int], span: int, burst: int) -> Tensor:
        """`_steps` at rows' slots 0..B-1, replayed from a CUDA graph where graphs are on."""
        batch = len(tokens)
        token_tensor = torch.tensor(tokens, device=self.device)[:, None]
        position_tensor = torch.tensor(positions, device=self.device)[:, None]
        if not self.cuda_graphs:
            return self._steps(token_tensor, position_tensor, span, burst)
        graph = self._graphs.get((batch, span, burst)) or self._capture(batch, span, burst)
        cuda_graph, static_tokens, static_positions, static_out = graph
        static_tokens.copy_(token_tensor)
        static_positions.copy_(position_tensor)
        cuda_graph.replay()
        return static_out

    def _capture(self, batch: int, span: int, burst: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        # Warm-up and capture write their keys and values at the cache's last position, which no
        # running sequence reads before it writes it.
        static_tokens = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        static_positions = torch.full((batch, 1), self.max_len - 1, dtype=torch.long, device=self.device)
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._steps(static_tokens, static_positions, span, burst)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self._steps(static_tokens, static_positions, span, burst)
        entry = (graph, static_tokens, static_positions, static_out)
        self._graphs[(batch, span, burst)] = entry
        return entry

    def _choose(self, logits: Tensor, sequences: list[Sequence]) -> list[int]:
        """One token per row: greedy, or sampled at the row's temperature and top-p."""
        choices = logits.argmax(-1)
        for row, sequence in enumerate(sequences):
            generation = sequence.generation
            if generation.temperature > 0:
                choices[row] = sample(logits[row], generation.temperature, generation.top_p, sequence.generator)
        return [int(t) for t in choices.tolist()]

    def _emit(self, sequence: Sequence, tokens: list[int]) -> None:
        generation = sequence.generation
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
        kept: list[int] = []
        finish: Finish | None = None
        for token in tokens:
            if token in self.eos_tokens or token in generation.stop_tokens:
                finish = "stop"
                break
            kept.append(token)
            if len(sequence.generated) + len(kept) >= generation.max_new_tokens:
                finish = "length"
                break
            if len(sequence.tokens) + len(kept) >= self.max_len:
                finish = "length"
                break
        sequence.tokens.extend(kept)
        sequence.generated.extend(kept)
        if kept:
            sequence.events.put(("tokens", kept))
        if finish is not None:
            self._finish(sequence, finish)

    def _finish(self, sequence: Sequence, finish: Finish) -> None:
        if sequence.finish is None:
            sequence.finish = finish
            sequence.finished_at = time.perf_counter()
            sequence.events.put(("end", finish))


def sample(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    """One token from `logits` [vocab] at `temperature`, within the smallest set of tokens whose
    probability reaches `top_p` (nucleus sampling), on the logits' device."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]
