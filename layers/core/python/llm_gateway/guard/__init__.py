"""Input guards: PII, prompt injection, topics, copyright, harmful content, blocklists, rate limits.

The chain's step is `step.guard_step`; each layer lives in its own module here.
"""
