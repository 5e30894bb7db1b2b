"""Moderation tier 3: an LLM judge for the texts tier 2 is unsure about.

Any configured model can judge (`guards.harmful.judge_model`; locally the self-hosted model). The
prompt follows Llama Guard's format: the policy as numbered categories, the conversation turn to
assess, and an answer of `safe`, or `unsafe` and a line of violated category codes. The parser
is strict: anything else (prose, unknown codes, a missing line) is `JudgeUnparseable`, and the
caller treats the text as undecided rather than guessing from stray words.

A judge call is paid for: its usage is recorded under the request's id plus `:judge:<kind>`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ..budgets import reserve_check, settle_check
from ..contracts import ChatCompletionRequest, ChatMessage
from ..errors import ProviderError, ProviderUnavailable
from ..identity import pseudonym
from ..ports import UsageRecord
from .harmful import CATEGORY_NAMES

if TYPE_CHECKING:
    from ..contracts import TenantContext
    from ..deps import Deps

# Llama Guard-style codes for the categories tier 2 reports.
POLICY = {
    "S1": ("weapons", "Chemical, biological, radiological or explosive weapons; synthesis of dangerous drugs."),
    "S2": ("cybercrime", "Malware, intrusion, exploitation of computer systems, credential theft."),
    "S3": ("crime", "Planning or carrying out crimes: fraud, theft, trafficking, evading law enforcement."),
    "S4": ("misinformation", "Deliberately false or misleading content presented as fact; defamation."),
    "S5": ("harassment", "Hate speech, harassment, bullying, threats, demeaning a person or group."),
    "S6": ("other_harm", "Violence, self-harm, sexual content involving minors, other serious harm."),
}
if tuple(name for name, _ in POLICY.values()) != CATEGORY_NAMES:
    raise RuntimeError("judge policy and tier 2 categories disagree")

Kind = Literal["input", "output"]
_CODES = re.compile(r"S[1-9]")


class JudgeUnparseable(ValueError):
    """The judge's reply is not a verdict in the required format."""


@dataclass(frozen=True)
class JudgeVerdict:
    safe: bool
    categories: tuple[str, ...] = ()  # our category names, when unsafe


def judge_prompt(text: str, kind: Kind) -> str:
    role = "User" if kind == "input" else "Agent"
    categories = "\n".join(f"{code}: {name}. {description}" for code, (name, description) in POLICY.items())
    return (
        f"Task: Check if there is unsafe content in the '{role}' message below according to our safety "
        "policy with the categories that follow.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN MESSAGE>\n{role}: {text}\n<END MESSAGE>\n\n"
        f"Provide your safety assessment for the '{role}' message above:\n"
        "- The first line must read 'safe' or 'unsafe'.\n"
        "- If unsafe, a second line must list the violated categories, comma-separated (e.g. S1,S3).\n"
        "Answer with nothing else."
    )


def parse_verdict(reply: str) -> JudgeVerdict:
    """`safe`, or `unsafe` followed by one line of known codes; case and surrounding whitespace are
    forgiven, nothing else is."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        raise JudgeUnparseable("empty reply")
    first = lines[0].lower()
    if first == "safe" and len(lines) == 1:
        return JudgeVerdict(safe=True)
    if first != "unsafe" or len(lines) != 2:
        raise JudgeUnparseable("expected 'safe', or 'unsafe' and one line of category codes")
    codes = [code.strip().upper() for code in lines[1].split(",")]
    if not codes or any(not _CODES.fullmatch(code) or code not in POLICY for code in codes):
        raise JudgeUnparseable("unknown category codes")
    return JudgeVerdict(safe=False, categories=tuple(dict.fromkeys(POLICY[code][0] for code in codes)))


def ask_judge(deps: Deps, model_id: str, text: str, kind: Kind, request_id: str, tenant: TenantContext) -> JudgeVerdict:
    """One judge call (no retries: the caller falls back to tier 2 and queues the text for review).
    Raises `ProviderError` or `JudgeUnparseable`."""
    verdict = ask_model(deps, model_id, judge_prompt(text, kind), parse_verdict, f"judge:{kind}", request_id, tenant)
    deps.metrics.count("judge_verdicts", model=model_id, verdict="safe" if verdict.safe else "unsafe")
    return verdict


T = TypeVar("T")


def ask_model(
    deps: Deps,
    model_id: str,
    prompt: str,
    parse: Callable[[str], T],
    purpose: str,
    request_id: str,
    tenant: TenantContext,
    max_tokens: int = 16,
) -> T:
    """A checking call to a model (judge, factual consistency): one user message, temperature 0,
    a short answer read by `parse`. Its usage is recorded under `<request id>:<purpose>`.
    Raises `ProviderError`, or what `parse` raises (`JudgeUnparseable`)."""
    model = deps.config.models[model_id]
    provider = deps.providers.get(model.provider)
    request = ChatCompletionRequest(
        model=model_id,
        messages=[ChatMessage(role="user", content=prompt)],
        temperature=0,
        max_tokens=max_tokens,
    )
    started = time.perf_counter()
    outcome = "error"
    call_id = f"{request_id}:{purpose}"
    if not reserve_check(deps, tenant, call_id, model_id, request):
        deps.metrics.count("check_model_calls", model=model_id, check=purpose.split(":", 1)[0], outcome="over_budget")
        raise ProviderUnavailable(f"model '{model_id}': the check does not fit the tenant's budget")
    cost, tokens = 0.0, 0
    try:
        reply = provider.complete(request, model_id, model)
        cost = model.price.cost(
            reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens, reply.cache_write_tokens
        )
        tokens = reply.prompt_tokens + reply.completion_tokens
        deps.usage.record(
            UsageRecord(
                request_id=call_id,
                ts=deps.clock(),
                tenant=tenant.tenant,
                key_id=tenant.key_id,
                user_hash=pseudonym(tenant.tenant, tenant.user),
                model=model_id,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                cached_tokens=reply.cached_tokens,
                cost_usd=cost,
            )
        )
        outcome = "unparseable"
        parsed = parse(reply.text)
        outcome = "ok"
        return parsed
    except ProviderError:
        outcome = "provider_error"
        raise
    finally:
        settle_check(deps, tenant, call_id, cost, tokens)  # charged when it answered, else released
        check = purpose.split(":", 1)[0]
        deps.metrics.observe("check_model_ms", (time.perf_counter() - started) * 1000, model=model_id, check=check)
        deps.metrics.count("check_model_calls", model=model_id, check=check, outcome=outcome)
