"""The OpenAI chat-completions protocol, spoken by the LLM teachers (LearNAT sec. 3.2) and the served student
(``ask --backend openai``, sec. 3.4): one client, one retry policy.

Input: a base URL (``.../v1``), a model name, an optional API key and a request body. Output: the JSON object
of an HTTP 200 answer (:meth:`OpenAIEndpoint.post`) and its choices (:func:`choice_texts`,
:func:`choice_logprob`).

Policy: a concurrency limit (a semaphore); retries with exponential back-off and jitter on 429, 5xx, timeouts
and dropped connections (``Retry-After`` honoured, at most 60 s); a total deadline per attempt (``timeout_s``:
a server dripping bytes cannot hold a request longer) and one budget for all attempts of a request
(``budget_s``). 401/403 raise :attr:`OpenAIEndpoint.fatal` at once; another 4xx raises :class:`BadAnswer`
with the server's message, as does a 200 whose body is not a JSON object; an exhausted budget raises
:class:`EndpointUnavailable`. ``who`` names the caller in every message (``teacher glm-4-plus: ...``,
``student qwen: ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from learnat_cli.errors import LearnatError


class EndpointUnavailable(LearnatError):
    """The server could not be reached or kept failing (timeouts, dropped connections, 429/5xx) for the whole
    retry budget of one request."""


class BadAnswer(LearnatError):
    """The server answered this request with something other than a chat completion: a body that is not a
    JSON object, or a non-retryable HTTP 4xx (a prompt over the context length, a bad request)."""


def json_body(resp, label: str) -> dict:
    """The JSON object of an HTTP 200 answer; HTML, malformed JSON or another JSON type is a clear error."""
    kind = (resp.headers.get("content-type") or "?").split(";")[0]
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        head = resp.text[:60].replace("\n", " ")
        raise BadAnswer(f"{label}: HTTP 200 but the body is not JSON ({kind}: {head!r})") from None
    if not isinstance(data, dict):
        raise BadAnswer(f"{label}: HTTP 200 but the body is a JSON {type(data).__name__}, "
                           "not an OpenAI chat completion object")
    return data


def _choices(data: dict) -> list[dict]:
    choices = data.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def choice_texts(data: dict) -> list[str]:
    """The message texts of a chat completion, in order (choices without text are left out)."""
    out = []
    for c in _choices(data):
        msg = c.get("message")
        text = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(text, str):
            out.append(text)
    return out


def choice_logprob(choice: dict) -> float | None:
    """Mean log-probability of a choice's tokens (``logprobs.content[*].logprob``), None when absent."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content:
        return None
    vals = [float(v) for v in (t.get("logprob") for t in content if isinstance(t, dict))
            if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def int_or_zero(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


class OpenAIEndpoint:
    """One OpenAI-compatible server (module docstring). ``on_call(data or None)`` is told every attempt (for
    usage accounting); :meth:`aclose` closes the HTTP client, which belongs to the running event loop."""

    who = "teacher"
    fatal: type[LearnatError] = LearnatError

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 6, backoff_s: float = 1.0,
                 budget_s: float | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.budget_s = budget_s if budget_s is not None else 5 * timeout_s
        self.backoff_s = backoff_s
        self._sem: asyncio.Semaphore | None = None
        self._client: Any = None

    @property
    def label(self) -> str:
        return f"{self.who} {self.model}"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _http(self):
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(headers=self.headers(), timeout=self.timeout_s)
        return self._client

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._sem = None

    def on_call(self, data: dict | None) -> None:
        """Told every attempt (``data``: the JSON answer of a 200, else None)."""

    async def post(self, body: dict) -> dict:
        """One chat completion, retried as the module docstring says."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        loop = asyncio.get_running_loop()
        t_end = loop.time() + self.budget_s
        attempt = 0
        while True:
            attempt += 1
            left = t_end - loop.time()
            async with self._semaphore():
                try:
                    resp = await asyncio.wait_for(self._http().post(url, json=body),
                                                  timeout=max(0.001, min(self.timeout_s, left)))
                    status = resp.status_code
                except (asyncio.TimeoutError, httpx.TimeoutException, httpx.TransportError) as e:
                    resp, status = None, None
                    err = "no complete answer within the deadline" if isinstance(e, asyncio.TimeoutError) \
                        else type(e).__name__
            if status == 200:
                data = json_body(resp, self.label)
                self.on_call(data)
                return data
            self.on_call(None)
            if status in (401, 403):
                raise self.fatal(f"{self.label} at {self.base_url}: HTTP {status} "
                                 f"(check the API key: --api-key or the preset's environment variable)")
            retryable = status is None or status == 429 or status >= 500
            if not retryable:
                detail = resp.text[:200].replace("\n", " ") if resp is not None else ""
                raise BadAnswer(f"{self.label}: HTTP {status}: {detail}")
            what = f"HTTP {status}" if status else err
            if attempt > self.max_retries:
                raise EndpointUnavailable(f"{self.label}: giving up after {attempt} attempts ({what})")
            delay = self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            if resp is not None and resp.headers.get("retry-after"):
                with contextlib.suppress(ValueError):
                    delay = max(delay, float(resp.headers["retry-after"]))
            delay = min(delay, 60.0)
            if loop.time() + delay >= t_end:
                raise EndpointUnavailable(f"{self.label}: giving up after {attempt} attempts in "
                                   f"{self.budget_s:g} s ({what})")
            await asyncio.sleep(delay)
