"""The embedded runtime: in-process runner, ASGI app (OpenAI API), CLI."""
