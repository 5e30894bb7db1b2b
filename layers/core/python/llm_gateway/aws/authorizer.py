"""API Gateway TOKEN authorizer: turns the bearer key into its SHA-256 digest for the chain.

It does not decide who may call: the guard step does, from the digest, so the refusal is an
OpenAI-style 401 from the same code path as everywhere else. The raw key never leaves this
function: not into the execution input, not into logs.
"""

from __future__ import annotations

from typing import Any

from ..config import hash_key


class Unauthorized(Exception):
    """API Gateway answers 401 when a TOKEN authorizer raises with exactly this message."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    """An Allow policy for the method, carrying `api_key_sha256` in the authorizer context."""
    token = str(event.get("authorizationToken") or "")
    scheme, _, key = token.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else token.strip()
    if not key:
        raise Unauthorized
    digest = hash_key(key)
    return {
        "principalId": digest[:16],
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}],
        },
        "context": {"api_key_sha256": digest},
    }
