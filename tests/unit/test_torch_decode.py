"""The torch engine's decode loop on tiny random Llama models, against `transformers` as the
reference: the compact model's logits, greedy decoding, continuous batching, speculative decoding
(output identical to plain greedy), prefix KV reuse (same as a cold prefill, never across
tenants), weight-only quantization, sampling and cancellation."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model_server.torch_engine.decode import DecodeCore, Generation, sample
from model_server.torch_engine.model import Llama, LlamaShape, load_hf_state_dict, random_weights
from model_server.torch_engine.prefix import PrefixCache, block_keys
from model_server.torch_engine.quant import Int4Linear, Int8Linear, quantize, weight_bytes
from model_server.torch_engine.speculative import DraftModel, PromptLookup

VOCAB = 320


def reference_model(seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
    """A tiny `transformers` Llama with grouped-query attention and peaked (large) weights, so that
    greedy choices are not near-ties."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **overrides,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def reference() -> LlamaForCausalLM:
    return reference_model()


def ours(reference: LlamaForCausalLM) -> Llama:
    shape = LlamaShape.from_hf_config(reference.config.to_dict())
    return load_hf_state_dict(shape, reference.state_dict(), torch.float32)


def tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


def hf_greedy(reference: LlamaForCausalLM, prompt: list[int], new: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():  # an explicit mask: generate would otherwise mask every token equal to pad
        out = reference.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    result: list[int] = out[0, len(prompt) :].tolist()
    return result


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ],
    ids=["rope", "llama3-rope-scaling"],
)
def test_logits_match_transformers_in_one_prefill_and_token_by_token(overrides: dict[str, Any]) -> None:
    reference = reference_model(1, **overrides)
    model = ours(reference)
    model.allocate_cache(2, 256)
    prompt = tokens(40, 1)
    with torch.no_grad():
        expected = reference(torch.tensor([prompt])).logits[0]
        whole = model(torch.tensor([prompt]), torch.arange(40)[None], first_slot=1)[0]
        causal = model(torch.tensor([prompt]), torch.arange(40)[None], first_slot=1, span=40, from_start=True)[0]
        model(torch.tensor([prompt[:30]]), torch.arange(30)[None], first_slot=0)
        stepwise = [
            model(torch.tensor([[t]]), torch.tensor([[30 + i]]), first_slot=0)[0, 0] for i, t in enumerate(prompt[30:])
        ]
    assert torch.allclose(whole, expected, atol=1e-3, rtol=1e-3)
    assert torch.allclose(causal, expected, atol=1e-3, rtol=1e-3)
    assert torch.allclose(torch.stack(stepwise), expected[30:], atol=1e-3, rtol=1e-3)


def test_a_named_shape_counts_its_parameters() -> None:
    model = random_weights(LlamaShape(VOCAB, 64, 128, 2, 4, 2, 16, tie_embeddings=True), torch.float32, "cpu")
    assert sum(p.numel() for p in model.parameters()) == model.shape.parameters_count()
    assert weight_bytes(model) == 4 * model.shape.parameters_count()  # the tied table is read by the head


# --------------------------------------------------------------------------- decoding


def test_greedy_decoding_equals_transformers_generate(reference: LlamaForCausalLM) -> None:
    prompt = tokens(25, 2)
    core = DecodeCore(ours(reference), slots=2, max_len=256)
    assert core.generate(Generation(prompt, 30)) == hf_greedy(reference, prompt, 30)


def test_requests_joining_a_running_batch_get_the_tokens_they_get_alone(reference: LlamaForCausalLM) -> None:
    prompts = [tokens(5 + 9 * i, 10 + i) for i in range(7)]
    alone = [hf_greedy(reference, p, 12 + 3 * i) for i, p in enumerate(prompts)]
    core = DecodeCore(ours(reference), slots=3, max_len=256)
    sequences = [core.submit(Generation(prompts[0], 12))]
    for i, prompt in enumerate(prompts[1:], start=1):  # one more request joins at every step
        core.step()
        sequences.append(core.submit(Generation(prompt, 12 + 3 * i)))
    while any(s.finish is None for s in sequences):
        assert core.busy <= 7
        core.step()
    assert [s.generated for s in sequences] == alone
    assert {s.slot for s in sequences} == {0, 1, 2}  # 7 requests through 3 slots
    assert all(s.finish == "length" for s in sequences)
    assert core.steps < sum(12 + 3 * i for i in range(7))  # steps were shared


def test_requests_admitted_together_are_prefilled_in_one_forward(reference: LlamaForCausalLM) -> None:
    model = ours(reference)
    core = DecodeCore(model, slots=6, max_len=256, prefix_blocks=16, block_size=8)
    shared = tokens(20, 40)
    core.run(Generation([*shared, 1], 3, salt="t"))  # caches the shared prefix
    shapes: list[tuple[int, ...]] = []
    forward = model.forward

    def counting(tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        shapes.append(tuple(tokens.shape))
        return forward(tokens, *args, **kwargs)

    model.forward = counting  # type: ignore[method-assign]
    prompts = [tokens(7, 41), tokens(19, 42), [*shared, 2, 3], tokens(3, 43)]
    sequences = [core.submit(Generation(p, 8, salt="t")) for p in prompts]
    core.step()
    assert shapes[0] == (4, 19)  # one row per slot, the longest prompt (the reused one needs 7)
    assert sequences[2].reused_positions == 16
    while any(s.finish is None for s in sequences):
        core.step()
    assert [s.generated for s in sequences] == [hf_greedy(reference, p, 8) for p in prompts]


def test_greedy_bursts_give_the_tokens_single_steps_give(reference: LlamaForCausalLM) -> None:
    prompts = [tokens(6, 50), tokens(11, 51), tokens(17, 52)]
    limits = [13, 5, 22]  # one ends inside the first burst, one inside a later one
    full = [hf_greedy(reference, p, n) for p, n in zip(prompts, limits, strict=True)]
    stop = full[2][9]
    core = DecodeCore(ours(reference), slots=4, max_len=256, burst=4, eos_tokens=frozenset({stop}))
    sequences = [core.submit(Generation(p, n)) for p, n in zip(prompts, limits, strict=True)]
    while any(s.finish is None for s in sequences):
        core.step()
    expected = [truncate(f, stop) for f in full]
    assert [s.generated for s in sequences] == expected
    assert core.steps <= 1 + -(-max(len(e) for e in expected) // 4) + 1  # bursts of 4, not a step a token
    late = core.submit(Generation(tokens(8, 53), 6))  # the slots a burst left behind serve the next
    core.step()
    assert core.run(Generation(tokens(9, 54), 6)).generated == hf_greedy(reference, tokens(9, 54), 6)
    assert late.wait() == truncate(hf_greedy(reference, tokens(8, 53), 6), stop)


def truncate(generated: list[int], stop: int) -> list[int]:
    return generated[: generated.index(stop)] if stop in generated else generated


def test_stop_tokens_end_a_request_without_the_token(reference: LlamaForCausalLM) -> None:
    prompt = tokens(20, 3)
    full = hf_greedy(reference, prompt, 20)
    stop = full[6]
    core = DecodeCore(ours(reference), slots=1, max_len=256, eos_tokens=frozenset({stop}))
    sequence = core.run(Generation(prompt, 20))
    assert sequence.generated == full[: full.index(stop)] and sequence.finish == "stop"


def test_the_cache_length_bounds_a_request(reference: LlamaForCausalLM) -> None:
    core = DecodeCore(ours(reference), slots=1, max_len=64)
    sequence = core.run(Generation(tokens(60, 4), 50))
    assert (len(sequence.tokens), sequence.finish) == (64, "length")
    with pytest.raises(ValueError, match="prompt has 64 tokens"):
        core.submit(Generation(tokens(64, 4), 1))
    with pytest.raises(ValueError, match="no tokens"):
        core.submit(Generation([], 1))


def test_a_cancelled_request_frees_its_slot(reference: LlamaForCausalLM) -> None:
    core = DecodeCore(ours(reference), slots=1, max_len=256)
    first = core.submit(Generation(tokens(10, 5), 100))
    waiting = core.submit(Generation(tokens(10, 6), 5))
    core.step()
    core.step()
    first.cancel()
    while waiting.finish is None:
        core.step()
    assert first.finish == "cancelled" and len(first.generated) == 3  # prefill's token and two steps
    assert waiting.generated == hf_greedy(reference, tokens(10, 6), 5)


def test_the_background_thread_streams_tokens_to_concurrent_callers(reference: LlamaForCausalLM) -> None:
    core = DecodeCore(ours(reference), slots=4, max_len=256)
    core.start()
    try:
        sequences = [core.submit(Generation(tokens(8, 20 + i), 10)) for i in range(6)]
        streamed = [[t for chunk in s.stream() for t in chunk] for s in sequences]
    finally:
        core.stop()
    assert streamed == [hf_greedy(reference, tokens(8, 20 + i), 10) for i in range(6)]


# --------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_by_seed_and_top_p_narrows_it(reference: LlamaForCausalLM) -> None:
    core = DecodeCore(ours(reference), slots=2, max_len=256)
    prompt = tokens(12, 7)
    sampled = [core.generate(Generation(prompt, 15, temperature=1.5, seed=s)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    nucleus = core.generate(Generation(prompt, 15, temperature=1.5, top_p=1e-6, seed=3))
    assert nucleus == hf_greedy(reference, prompt, 15)  # the smallest nucleus is the top token


def test_sample_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1, 0.0]))
    generator = torch.Generator().manual_seed(0)
    draws = [int(sample(logits, 1.0, 1.0, generator)) for _ in range(2000)]
    assert 3 not in draws
    assert abs(draws.count(0) / 2000 - 0.7) < 0.04 and abs(draws.count(1) / 2000 - 0.2) < 0.04
    top = [int(sample(logits, 1.0, 0.75, generator)) for _ in range(500)]
    assert set(top) == {0, 1}  # 0.7 alone does not reach 0.75; with 0.2 it does


# --------------------------------------------------------------------------- speculative decoding


def copy_heavy_prompt() -> list[int]:
    body = tokens(30, 8)
    return body + body + body[:10]


def test_prompt_lookup_proposes_what_followed_the_last_ngram() -> None:
    drafter = PromptLookup(max_ngram=3)
    history = [1, 2, 3, 4, 5, 9, 2, 3]
    assert drafter.propose(0, history, 3) == [4, 5, 9]
    assert drafter.propose(0, [*history, 7], 3) == []  # 7 never occurred before
    assert drafter.propose(0, [*history, 4, 5], 2) == [9, 2]  # the index grows with the history
    assert drafter.propose(1, [5, 6, 5], 4) == [6, 5]  # per slot; a match near the end is short


@pytest.mark.parametrize("drafter_kind", ["prompt_lookup", "draft_model"])
def test_speculative_greedy_output_is_identical_and_takes_fewer_steps(
    reference: LlamaForCausalLM, drafter_kind: str
) -> None:
    prompt = copy_heavy_prompt()
    plain = DecodeCore(ours(reference), slots=2, max_len=256)
    expected = plain.run(Generation(prompt, 40))
    if drafter_kind == "prompt_lookup":
        drafter: Any = PromptLookup()
    else:  # the target itself as draft: every proposal is right
        draft = ours(reference)
        draft.allocate_cache(2, 256)
        drafter = DraftModel(draft)
    fast = DecodeCore(ours(reference), slots=2, max_len=256, drafter=drafter, draft_tokens=6)
    first = fast.run(Generation(prompt, 40))
    second = fast.run(Generation(tokens(15, 9), 25))  # the slot's drafter state is reset
    assert first.generated == expected.generated
    assert second.generated == hf_greedy(reference, tokens(15, 9), 25)
    assert first.proposed > 0
    if drafter_kind == "draft_model":  # a random model does not copy: prompt lookup's gain is shown on SmolLM2
        assert first.accepted == first.proposed and fast.steps < plain.steps


def test_a_wrong_draft_costs_steps_not_tokens(reference: LlamaForCausalLM) -> None:
    class Wrong:
        def propose(self, slot: int, history: list[int], k: int) -> list[int]:
            return [(history[-1] + 1) % VOCAB] * k

        def reset(self, slot: int) -> None:
            pass

    prompt = tokens(20, 10)
    core = DecodeCore(ours(reference), slots=1, max_len=256, drafter=Wrong(), draft_tokens=4)
    assert core.run(Generation(prompt, 20)).generated == hf_greedy(reference, prompt, 20)


def test_speculation_is_for_a_lone_greedy_request(reference: LlamaForCausalLM) -> None:
    prompt = copy_heavy_prompt()
    core = DecodeCore(ours(reference), slots=2, max_len=256, drafter=PromptLookup())
    sampled = core.run(Generation(prompt, 20, temperature=0.8, seed=1))
    together = [core.submit(Generation(prompt, 20)), core.submit(Generation(tokens(9, 11), 20))]
    while any(s.finish is None for s in together):
        core.step()
    assert sampled.proposed == 0 and all(s.proposed == 0 for s in together)


# --------------------------------------------------------------------------- prefix reuse


def test_block_keys_chain_the_salt_and_every_earlier_token() -> None:
    a = block_keys("t1", list(range(40)), 16)
    assert len(a) == 2
    assert block_keys("t1", list(range(40)), 16) == a
    assert block_keys("t2", list(range(40)), 16)[0] != a[0]
    changed = block_keys("t1", [99, *range(1, 40)], 16)
    assert changed[0] != a[0] and changed[1] != a[1]  # a later block depends on the earlier ones


def test_a_reused_prefix_decodes_as_a_cold_prefill_and_never_across_tenants(reference: LlamaForCausalLM) -> None:
    shared = tokens(70, 12)
    core = DecodeCore(ours(reference), slots=2, max_len=256, prefix_blocks=32, block_size=8)
    cold = core.run(Generation([*shared, 5, 6], 15, salt="tenant-a"))
    warm = core.run(Generation([*shared, 7, 8, 9], 15, salt="tenant-a"))
    other = core.run(Generation([*shared, 7, 8, 9], 15, salt="tenant-b"))
    unsalted = core.run(Generation([*shared, 7, 8, 9], 15))
    assert cold.reused_positions == 0 and warm.reused_positions == 64  # 8 whole blocks of 8
    assert other.reused_positions == 0 and unsalted.reused_positions == 0
    expected = hf_greedy(reference, [*shared, 7, 8, 9], 15)
    assert warm.generated == other.generated == unsalted.generated == expected
    exact = core.run(Generation(shared[:64], 5, salt="tenant-a"))
    assert exact.reused_positions == 56  # the last token is always prefilled


def test_the_prefix_pool_evicts_least_recently_used_blocks_deepest_first(reference: LlamaForCausalLM) -> None:
    model = ours(reference)
    model.allocate_cache(1, 128)
    pool = PrefixCache(model, capacity_blocks=4, block_size=4)
    first, second = tokens(13, 13), tokens(9, 14)
    with torch.no_grad():
        model(torch.tensor([first]), torch.arange(13)[None])
    assert pool.store("s", first, 0) == 3
    with torch.no_grad():
        model(torch.tensor([second]), torch.arange(9)[None])
    assert pool.store("s", second, 0) == 2  # evicts the first prompt's deepest block
    assert len(pool) == 4
    assert pool.load("s", first, 0) == 8 and pool.load("s", second, 0) == 8


# --------------------------------------------------------------------------- quantization


def realistic_model(seed: int = 0) -> Llama:
    shape = LlamaShape(VOCAB, 256, 512, 2, 4, 2, 64)
    model = random_weights(shape, torch.float32, "cpu", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.05, generator=generator)
    return model


@pytest.mark.parametrize(("kind", "min_cosine", "max_bytes"), [("int8", 0.999, 0.27), ("int4", 0.93, 0.20)])
def test_weight_only_quantization_keeps_logits_close_in_a_fraction_of_the_bytes(
    kind: str, min_cosine: float, max_bytes: float
) -> None:
    base = realistic_model()
    quantized = copy.deepcopy(base)
    kernels = quantize(quantized, kind)
    assert sum(kernels.values()) == 2 * 4 + 1  # four per block and the head
    prompt = torch.tensor([tokens(30, 15)])
    for model in (base, quantized):
        model.allocate_cache(1, 64)
    with torch.no_grad():
        expected, got = base(prompt, torch.arange(30)[None]), quantized(prompt, torch.arange(30)[None])
    cosine = torch.nn.functional.cosine_similarity(expected, got, dim=-1)
    assert float(cosine.min()) >= min_cosine
    assert weight_bytes(quantized) / weight_bytes(base) <= max_bytes  # of float32


def test_int8_rounds_each_output_channel_on_its_own_scale() -> None:
    linear = torch.nn.Linear(64, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(3, 64) * torch.tensor([[0.01], [1.0], [100.0]]))
    layer = Int8Linear(linear)
    error = (layer.dequantized() - linear.weight).abs().amax(dim=1)
    scale = linear.weight.abs().amax(dim=1) / 127
    assert torch.all(error <= scale / 2 + 1e-7)


def test_int4_packs_two_codes_a_byte_and_its_kernel_agrees_with_the_plain_product() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=False)
    layer = Int4Linear(linear, group=32)
    assert layer.packed.dtype == torch.uint8 and layer.packed.shape == (64, 128)
    assert layer.codes().min() >= 0 and layer.codes().max() <= 15
    error = (layer.dequantized() - linear.weight).abs()
    steps = (linear.weight.view(64, 8, 32).amax(-1) - linear.weight.view(64, 8, 32).amin(-1)) / 15
    assert torch.all(error.view(64, 8, 32) <= steps[..., None] / 2 + 1e-6)
    x = torch.randn(5, 256)
    assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.dequantized()), atol=1e-3, rtol=1e-3)


def test_unknown_quantization_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown quantization 'int3'"):
        quantize(realistic_model(), "int3")


def test_the_compiled_step_decodes_the_same_tokens(reference: LlamaForCausalLM) -> None:
    prompts = [tokens(9, 30), tokens(14, 31)]
    core = DecodeCore(ours(reference), slots=2, max_len=128, min_span=128, compile=True)
    sequences = [core.submit(Generation(p, 10)) for p in prompts]
    while any(s.finish is None for s in sequences):
        core.step()
    assert [s.generated for s in sequences] == [hf_greedy(reference, p, 10) for p in prompts]
