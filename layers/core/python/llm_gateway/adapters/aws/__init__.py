"""AWS adapters: DynamoDB (usage ledger, audit log) and Momento (exact cache, rate limiter).

Each module imports its SDK lazily, so importing an adapter module costs milliseconds; the SDK
loads when the adapter (or its client) is built, which a Lambda does once, at initialisation.
"""

from __future__ import annotations


class StoreUnavailable(RuntimeError):
    """A store the request cannot do without did not answer (e.g. a purge that did not happen)."""
