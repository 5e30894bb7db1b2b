"""The provider call: `step.invoke_step`, with retries, fallbacks, usage and cost."""
