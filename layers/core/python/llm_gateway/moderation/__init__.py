"""Output moderation: blocklists, harmful content, groundedness and consistency, the LLM judge.

The chain's step is `step.moderate_step`.
"""
