"""What the loopback OpenAI-protocol servers of the tests share: writing a reply, and a chat completion's
choices (``n`` of them, the texts cycled, with token log-probabilities when asked)."""

from __future__ import annotations

import json


def reply(handler, status: int, raw: bytes, kind: str | None = "application/json",
          headers: dict | None = None) -> None:
    """Send ``raw`` with ``status`` from a ``BaseHTTPRequestHandler``."""
    handler.send_response(status)
    if kind:
        handler.send_header("Content-Type", kind)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def completion(texts: list[str], n: int, usage: dict, logprobs: list[float | None] | None = None) -> bytes:
    """A chat completion of ``n`` choices cycling through ``texts`` (and ``logprobs``, three tokens each)."""
    choices = []
    for i in range(n):
        c: dict = {"index": i, "message": {"role": "assistant", "content": texts[i % len(texts)]}}
        lp = logprobs[i % len(logprobs)] if logprobs else None
        if lp is not None:
            c["logprobs"] = {"content": [{"token": "x", "logprob": lp}] * 3}
        choices.append(c)
    return json.dumps({"choices": choices, "usage": usage}).encode()
