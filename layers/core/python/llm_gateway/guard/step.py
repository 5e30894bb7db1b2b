"""Input checks: API key -> tenant, request size limits, rate limits, input blocklist, then the
tenant's guard layers (prompt injection, PII, topics, copyright, harmful content), each a typed
`GuardDecision` with latency metrics."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..compression import Compressed, compress
from ..config import Compression, Guards, InjectionGuard, PiiGuard, SystemPrompt, TopicGuard
from ..contracts import (
    PROMPT_ROLES,
    ChatMessage,
    GatewayState,
    GuardDecision,
    GuardResult,
    RouteResult,
    TenantContext,
    TextPart,
)
from ..decisions import record_layer, submit_for_review
from ..errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge, RateLimited
from ..identity import pseudonym
from ..moderation.cascade import TIER2 as HARMFUL_LAYER
from ..moderation.cascade import harmful_decision
from ..moderation.harmful import load_harmful_classifier
from ..output_format import check_schema
from ..routing.step import plan_route, resolve_route
from .allowlist import CLASSIFIER_LAYERS, allowlist_decision, latest_user_text
from .copyright import copyright_decision
from .injection import load_injection_classifier
from .ner import NER_TYPES, find_names
from .pii import STRUCTURED_TYPES as PII_TYPES
from .pii import Vault, find_pii, mask, overlaps, placeholder_entity

if TYPE_CHECKING:
    from ..deps import Deps


def authenticate(state: GatewayState, deps: Deps) -> TenantContext:
    """Find the tenant whose key digest the caller presented (a batch line: its job's tenant)."""
    if state.caller.batch_tenant is not None:
        if state.caller.batch_tenant not in deps.config.tenants:
            raise AuthenticationFailed("The batch's tenant is not configured.")
        return TenantContext(tenant=state.caller.batch_tenant, key_id="batch", user=state.request.user)
    return authenticate_key(state.caller.api_key_sha256, deps, state.request.user)


def authenticate_key(digest: str | None, deps: Deps, user: str | None) -> TenantContext:
    """The tenant holding the key with this digest (`AuthenticationFailed` for none)."""
    found = deps.keys.get(digest) if digest else None
    if found is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    tenant, key_id = found
    return TenantContext(tenant=tenant, key_id=key_id, user=user)


def check_size(state: GatewayState, deps: Deps) -> None:
    limits = deps.config.limits
    if state.caller.body_bytes > limits.max_body_bytes:
        raise PayloadTooLarge(f"Request body exceeds {limits.max_body_bytes} bytes.")
    if state.request.choices_wanted() > limits.max_choices:
        raise InvalidRequest(f"n may be at most {limits.max_choices}.", param="n")
    messages = state.request.messages
    if len(messages) > limits.max_messages:
        raise InvalidRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
    if sum(len(m.text()) for m in messages) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The messages exceed {limits.max_prompt_chars} characters.",
            param="messages",
            code="prompt_too_long",
        )


def check_rate(context: TenantContext, deps: Deps, client_ip: str | None = None) -> None:
    """Token buckets per tenant, per user (the key id when the request names no user) and per
    client IP."""
    tenant = deps.config.tenants[context.tenant]
    now = deps.clock()
    if tenant.rate_limit is not None:
        wait = deps.limiter.acquire(f"t:{context.tenant}", tenant.rate_limit, now)
        if wait > 0:
            raise RateLimited("Rate limit reached for this tenant.", retry_after_s=wait)
    if tenant.user_rate_limit is not None:
        user = context.user if context.user is not None else f"key:{context.key_id}"
        wait = deps.limiter.acquire(f"u:{context.tenant}:{user}", tenant.user_rate_limit, now)
        if wait > 0:
            raise RateLimited("Rate limit reached for this user.", retry_after_s=wait)
    if tenant.ip_rate_limit is not None and client_ip:
        wait = deps.limiter.acquire(
            f"ip:{context.tenant}:{pseudonym(context.tenant, client_ip)}", tenant.ip_rate_limit, now
        )
        if wait > 0:
            raise RateLimited("Rate limit reached for this client address.", retry_after_s=wait)


@dataclass
class Screening:
    """One request passing the input layers: what they read (`seen`: the messages, PII masked) and
    the decisions so far. `classify` is False when a reviewer allow-listed the text: the classifier
    layers are skipped."""

    state: GatewayState
    deps: Deps
    context: TenantContext
    policy: Guards
    seen: list[ChatMessage]
    pii: GuardDecision | None
    pii_s: float
    masked: list[ChatMessage] | None  # None: nothing was masked
    masked_context: list[str] | None
    restorable: dict[str, str]
    classify: bool = True
    decisions: list[GuardDecision] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """A layer's decision; `refusal`: the tenant's message when it blocks; `seconds`: its time when
    it was measured before the layer's turn (PII, screened first to mask the text)."""

    decision: GuardDecision
    refusal: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class InputLayer:
    name: str
    applies: Callable[[Screening], bool]
    check: Callable[[Screening], Verdict]


def _pii(screen: Screening) -> Verdict:
    """PII's decision, made when the text was masked (before the other layers)."""
    if screen.pii is None:  # the layer applies only when PII was screened
        raise LookupError("PII was not screened")
    return Verdict(screen.pii, seconds=screen.pii_s)


def _topic(screen: Screening) -> Verdict:
    decision, refusal = check_topic(screen.seen, screen.policy.topics)
    return Verdict(decision, refusal)


# In order. PII is screened before the others (they read the masked text) and recorded after
# injection; the topic and copyright policies come before harmful content, so a request the
# tenant does not serve is refused as such (with its message) and never costs a judge call.
INPUT_LAYERS: tuple[InputLayer, ...] = (
    InputLayer(
        "injection",
        lambda s: s.classify and s.policy.injection.enabled,
        lambda s: Verdict(check_injection(s.state, s.policy.injection)),
    ),
    InputLayer("pii", lambda s: s.pii is not None, _pii),
    InputLayer("topics", lambda s: s.classify and s.policy.topics.enabled, _topic),
    InputLayer(
        "copyright",
        lambda s: s.classify and s.policy.copyright.enabled,
        lambda s: Verdict(copyright_decision(s.seen, s.policy.copyright), s.policy.copyright.refusal),
    ),
    InputLayer(
        "harmful",
        lambda s: s.classify and s.policy.harmful.enabled and s.policy.harmful.input,
        lambda s: Verdict(check_harmful_input(s.state, s.deps, s.context, s.seen)),
    ),
)


def guard_step(state: GatewayState, deps: Deps) -> GuardResult:
    """Refuse what must not reach a model; protocol failures raise, policy refusals return `blocked`."""
    context = authenticate(state, deps)
    check_size(state, deps)
    check_schema(state.request)
    resolved = resolve_route(deps.config, context.tenant, state.request.model)  # unknown model: 404 first
    if state.caller.batch_tenant is None:  # a batch is paced by its job, not by the online limits
        check_rate(context, deps, state.caller.client_ip)
    tools = deps.config.tenants[context.tenant].tools
    refused_tool = next((t.function.name for t in state.request.tools or [] if tools.refused(t.function.name)), None)
    if refused_tool is not None:
        refusal = f"The function '{refused_tool}' may not be offered to models under this tenant's policy."
        return GuardResult(
            outcome="blocked", tenant=context, layer="tool_not_allowed", reason=refused_tool, message=refusal
        )
    blocklist = deps.input_blocklists[context.tenant]
    for message in state.request.messages:
        rule = blocklist.first_match(message.text())
        if rule is not None:
            return GuardResult(outcome="blocked", tenant=context, layer="blocklist", reason=rule)
    screen = _screen(state, deps, context)
    for layer in INPUT_LAYERS:
        if not layer.applies(screen):
            continue
        started = time.perf_counter()
        verdict = layer.check(screen)
        record_layer(deps, verdict.decision, started if verdict.seconds is None else started - verdict.seconds)
        screen.decisions.append(verdict.decision)
        if verdict.decision.action == "block":
            return _blocked(screen, verdict)
    planned = plan_route(state, deps, context.tenant, resolved)
    # an eval or a replay is never put on a rollout's or an experiment's arm
    if not state.caller.offline and (deps.rollouts is not None or deps.experiments is not None):
        from ..experiments.ab import with_experiment  # only where a runtime keeps them
        from ..experiments.rollouts import with_rollout

        planned = with_rollout(deps.rollouts, deps.config, context, planned)
        planned = with_experiment(deps.experiments, deps.config, context, planned)
    return _allowed(screen, planned)  # a refused request never plans


def with_system_prompt(messages: list[ChatMessage], prompt: SystemPrompt) -> list[ChatMessage]:
    """The tenant's system prompt first; with `enforce`, the caller's own system and developer
    messages are dropped."""
    kept = [m for m in messages if not (prompt.mode == "enforce" and m.role in PROMPT_ROLES)]
    return [ChatMessage(role="system", content=prompt.text), *kept]


def _screen(state: GatewayState, deps: Deps, context: TenantContext) -> Screening:
    """Mask PII (timed: its decision is recorded in its turn), then consult the allow-list."""
    policy = deps.config.tenants[context.tenant].guards
    started = time.perf_counter()
    pii, masked, masked_context, restorable = (
        check_pii(state, policy.pii) if policy.pii.enabled else (None, None, None, {})
    )
    screen = Screening(
        state=state,
        deps=deps,
        context=context,
        policy=policy,
        seen=masked if masked is not None else state.request.messages,
        pii=pii,
        pii_s=time.perf_counter() - started,
        masked=masked,
        masked_context=masked_context,
        restorable=restorable,
    )
    rejected = pii is not None and pii.action == "block"
    # The allow-list never overrides a PII rejection (nor is it consulted then)
    screen.classify = rejected or not run_allowlist(deps, context.tenant, policy, screen.seen, screen.decisions)
    return screen


def _blocked(screen: Screening, verdict: Verdict) -> GuardResult:
    """The refusal; a classifier's is queued for review too (a reviewer's approval allow-lists it)."""
    deps, last = screen.deps, verdict.decision
    pii_rejected = screen.pii is not None and screen.pii.action == "block"
    if deps.review is not None and last.layer in CLASSIFIER_LAYERS and not pii_rejected:
        text = scored_text(screen.seen)
        submit_for_review(
            screen.state, deps.review, screen.context.tenant, "input", [last], text, deps.clock(), "block"
        )
    return GuardResult(
        outcome="blocked",
        tenant=screen.context,
        layer=last.layer,
        reason=last.reason,
        message=verdict.refusal,
        decisions=screen.decisions,
    )


def _allowed(screen: Screening, route: RouteResult) -> GuardResult:
    """What the model will see: the masked (and, for tenants that enable it, compressed) messages,
    and the route planned for it (read by the cache and the router)."""
    deps, tenant = screen.deps, screen.context.tenant
    masked = screen.masked
    saved = 0
    compression = deps.config.tenants[tenant].compression
    if compression.enabled:
        compressed = compress_messages(screen.seen, compression)
        if compressed.chars_after < compressed.chars_before:
            masked, saved = compressed.messages, compressed.saved_tokens
            deps.metrics.count("compression_saved_tokens", saved, tenant=tenant)
    prompt = deps.config.tenants[tenant].system_prompt_for(route.route)
    if prompt is not None:
        masked = with_system_prompt(masked if masked is not None else screen.state.request.messages, prompt)
    if deps.review is not None and any(d.action == "flag" for d in screen.decisions):
        submit_for_review(
            screen.state, deps.review, tenant, "input", screen.decisions, scored_text(screen.seen), deps.clock()
        )
    return GuardResult(
        outcome="allowed",
        tenant=screen.context,
        decisions=screen.decisions,
        masked_messages=masked,
        masked_context=screen.masked_context,
        restorable=screen.restorable,
        saved_tokens=saved,
        route=route,
    )


def scored_text(messages: list[ChatMessage]) -> str:
    """What the input layers scored, as a review item keeps it: the user and tool messages (PII
    masked, not compressed)."""
    return "\n\n".join(m.text() for m in messages if m.role in ("user", "tool"))


def run_allowlist(
    deps: Deps, tenant: str, policy: Guards, messages: list[ChatMessage], decisions: list[GuardDecision]
) -> bool:
    """True (and an `allowlist` pass decision recorded) when a reviewer approved this request's
    latest user message for the tenant: the classifier layers are skipped. Looked up only when
    one of them is on."""
    if deps.allowlist is None or not (
        policy.injection.enabled
        or (policy.harmful.enabled and policy.harmful.input)
        or policy.topics.enabled
        or policy.copyright.enabled
    ):
        return False
    started = time.perf_counter()
    decision = allowlist_decision(deps.allowlist, tenant, messages)
    if decision is None:
        return False
    record_layer(deps, decision, started)
    decisions.append(decision)
    return True


def check_harmful_input(
    state: GatewayState, deps: Deps, context: TenantContext, messages: list[ChatMessage]
) -> GuardDecision:
    """The harmful-content cascade on the user message tier 2 scores highest (PII already masked:
    a judge model sees placeholders, not values)."""
    texts = [m.text() for m in messages if m.role == "user" and m.text()]
    if not texts:
        return GuardDecision(layer=HARMFUL_LAYER, action="pass", score=0.0)
    classifier = load_harmful_classifier()
    worst = max(texts, key=lambda text: classifier.assess_long(text).score) if len(texts) > 1 else texts[0]
    policy = deps.config.tenants[context.tenant].guards.harmful
    return harmful_decision(worst, "input", policy, deps, state.request_id, context)


def compress_messages(messages: list[ChatMessage], policy: Compression) -> Compressed:
    embed = None
    if policy.lossy_max_tokens is not None:
        from ..semantic.embeddings import default_embedder

        embed = default_embedder().embed
    return compress(messages, policy, embed)


def check_topic(messages: list[ChatMessage], policy: TopicGuard) -> tuple[GuardDecision, str | None]:
    """The latest user message's nearest topic: a denied one, or (when the tenant lists allowed
    topics) any but those, is refused with the tenant's message."""
    text = latest_user_text(messages)
    if not text:
        return GuardDecision(layer="topic", action="pass"), None
    from ..semantic.embeddings import default_embedder
    from .topics import embedded_text, refusal_message, topic_classifier  # numpy: only for tenants with topics

    match = topic_classifier(policy).match(default_embedder().embed_one(embedded_text(text)), text)
    refused = match.kind == "denied" or (match.kind == "other" and bool(policy.allowed))
    if not refused:
        return GuardDecision(
            layer="topic", action="pass", score=match.score, reason=f"{match.kind}: {match.topic}"
        ), None
    decision = GuardDecision(
        layer="topic", action=policy.action, score=match.score, reason=f"{match.kind}: {match.topic}"
    )
    return decision, refusal_message(policy, match)


def check_injection(state: GatewayState, policy: InjectionGuard) -> GuardDecision:
    """Score every user and tool message (tool results carry indirect injections); the highest
    score decides. System and developer prompts are the tenant's own and are not scanned."""
    classifier = load_injection_classifier()
    threshold = policy.threshold if policy.threshold is not None else classifier.threshold
    scanned = [m.text() for m in state.request.messages if m.role in ("user", "tool")]
    score = max((classifier.score(text) for text in scanned if text), default=0.0)
    if score < threshold:
        return GuardDecision(layer="prompt_injection", action="pass", score=round(score, 4))
    return GuardDecision(
        layer="prompt_injection",
        action=policy.action,
        score=round(score, 4),
        reason=f"injection score {score:.2f} >= {threshold:.2f}",
    )


def check_pii(
    state: GatewayState, policy: PiiGuard
) -> tuple[GuardDecision, list[ChatMessage] | None, list[str] | None, dict[str, str]]:
    """Find PII in every message, whatever its role (a system prompt or a tool result reaches the
    model as surely as a user message), and in the RAG `context`; apply the tenant's policy: reject
    (the decision blocks), or mask (the masked messages and passages, and the restorable values),
    or allow. Decisions name entity types and counts, never values."""
    watched, named = _watched(policy)
    if not (watched or named):
        return GuardDecision(layer="pii", action="pass"), None, None, {}
    vault = Vault.after(m.text() for m in state.request.messages)
    found: Counter[str] = Counter()
    masked = [_mask_message(message, watched, named, vault, found) for message in state.request.messages]
    context = state.request.context
    masked_context = [_masked_text(p, watched, named, vault, found) for p in context] if context else None
    rejected = sorted(e for e in found if policy.action(e) == "reject")
    if rejected:
        return GuardDecision(layer="pii", action="block", reason=f"not allowed: {', '.join(rejected)}"), None, None, {}
    if not found:
        return GuardDecision(layer="pii", action="pass"), None, None, {}
    summary = ", ".join(f"{entity} x{count}" for entity, count in sorted(found.items()))
    restorable = {p: v for p, v in vault.values.items() if placeholder_entity(p) in policy.restore}
    return GuardDecision(layer="pii", action="mask", reason=f"masked {summary}"), masked, masked_context, restorable


class ConversationMasker:
    """Masks a conversation as a store may keep it, and the strings kept beside it: messages as
    `check_pii` masks a request holding them (the same walk from a vault numbered after the
    placeholders they hold, so the same placeholders), then whatever else is given (the answer,
    the request's other fields) with the same vault: a value the answer restored goes back to its
    placeholder, new PII gets a new one. Every type the policy does not allow is masked (a
    `reject` type too: nothing raw is kept); with nothing to mask, everything stays as it is."""

    def __init__(self, messages: list[ChatMessage], policy: PiiGuard) -> None:
        self._watched, self._named = _watched(policy)
        self.active = policy.enabled and bool(self._watched or self._named)
        self._vault = Vault.after(m.text() for m in messages) if self.active else Vault()
        self._found: Counter[str] = Counter()

    def text(self, text: str) -> str:
        return _masked_text(text, self._watched, self._named, self._vault, self._found) if self.active else text

    def message(self, message: ChatMessage) -> ChatMessage:
        """The message masked; tool calls' arguments as text (a placeholder keeps JSON valid)."""
        if not self.active:
            return message
        copy = _mask_message(message, self._watched, self._named, self._vault, self._found)
        if not message.tool_calls:
            return copy
        calls = [
            call.model_copy(
                update={"function": call.function.model_copy(update={"arguments": self.text(call.function.arguments)})}
            )
            for call in message.tool_calls
        ]
        return copy.model_copy(update={"tool_calls": calls})

    def json(self, value: Any) -> Any:
        """Parsed JSON with every string masked, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value


def mask_texts(texts: list[str], policy: PiiGuard) -> tuple[GuardDecision, list[str]]:
    """`check_pii` for plain texts (inputs to embed): the texts with PII masked (placeholders are
    not restored: an embedding has nothing to put them back in), or a blocking decision."""
    watched, named = _watched(policy)
    if not (watched or named):
        return GuardDecision(layer="pii", action="pass"), texts
    vault, found = Vault(), Counter[str]()
    masked = [_masked_text(text, watched, named, vault, found) for text in texts]
    rejected = sorted(e for e in found if policy.action(e) == "reject")
    if rejected:
        return GuardDecision(layer="pii", action="block", reason=f"not allowed: {', '.join(rejected)}"), texts
    return GuardDecision(layer="pii", action="mask" if found else "pass"), masked


def _watched(policy: PiiGuard) -> tuple[list[str], list[str]]:
    """The structured and the named entity types the policy does not simply allow."""
    watched = [entity for entity in PII_TYPES if policy.action(entity) != "allow"]
    named = [entity for entity in NER_TYPES if policy.ner and policy.action(entity) != "allow"]
    return watched, named


def masked_opening_text(text: str, policy: PiiGuard) -> str:
    """`text` as `check_pii` masks it when it opens a request (a system prompt): what the caches
    key and tag, so a purge by system prompt can find answers given under a prompt holding PII."""
    watched, named = _watched(policy)
    if not (policy.enabled and (watched or named)):
        return text
    return _masked_text(text, watched, named, Vault(), Counter())


def _masked_text(text: str, entities: list[str], named: list[str], vault: Vault, found: Counter[str]) -> str:
    spans = find_pii(text, entities)
    if named:  # validated structured values win where a name or place overlaps them
        spans = sorted(
            spans + [n for n in find_names(text, named) if not any(overlaps(n, s) for s in spans)],
            key=lambda span: span.start,
        )
    found.update(span.entity for span in spans)
    return mask(text, spans, vault) if spans else text


def _mask_message(
    message: ChatMessage, entities: list[str], named: list[str], vault: Vault, found: Counter[str]
) -> ChatMessage:
    if isinstance(message.content, str):
        return message.model_copy(update={"content": _masked_text(message.content, entities, named, vault, found)})
    if isinstance(message.content, list):
        parts = [
            part.model_copy(update={"text": _masked_text(part.text, entities, named, vault, found)})
            if isinstance(part, TextPart)
            else part
            for part in message.content
        ]
        return message.model_copy(update={"content": parts})
    return message
