"""Lines of batch files (the OpenAI batch format) for the batch tests."""

from __future__ import annotations

import json
from typing import Any


def chat_line(custom_id: str, content: Any, model: str = "default", **body: Any) -> str:
    """One `POST /v1/chat/completions` request line with a single user message."""
    request = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request})
