"""The OpenAI-compatible HTTP API: the ASGI app (`app.py`) that `llm-gateway serve` and the
streaming Lambda both serve, its OpenAPI document, and the body reader and server start-up it
shares with the model server (`serving.py`)."""
