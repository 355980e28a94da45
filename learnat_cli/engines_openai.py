"""A served student: ``learnat ask --backend openai --base-url URL --model NAME`` (LearNAT sec. 3.4 inference
on a server: vLLM, SGLang, llama.cpp's server and Ollama all speak the OpenAI chat-completions protocol).

Input: the server's base URL (``http://host:8000/v1``), the served model name (a LoRA adapter served by vLLM
under its own name is just another name), an optional API key (``--api-key`` or ``LEARNAT_STUDENT_API_KEY``).
Output: :class:`ServedStudent`, with the engine interface of :func:`learnat_cli.models.open_student` —
``chat``, ``chat_batch`` (the prompts of a batch sent concurrently, at most ``concurrency`` at a time),
``sample`` (``n`` candidates from one request with ``n=``, topped up when a server ignores ``n``; mean
token log-probabilities when the server returns ``logprobs``), ``batch_size`` (= ``concurrency``).

Transport and retries are the teachers' (:mod:`learnat_cli.openai_http`). On opening, ``GET /models`` checks
that the server is up and serves the model (a clear error naming the models it does serve); a server without
that route is tolerated. During a run: a server that is down or keeps failing for the whole retry budget, or
that rejects the key, stops the run (its output so far is kept and a rerun resumes); an answer that is not a
chat completion (garbage, no choices, an HTTP 4xx such as a prompt over the context length) raises
:class:`~learnat_cli.errors.GenerationError`, which ``ask`` records as that question's error. Answers are cut
after their ``Final SQL:`` line when ``stop_at_final`` (servers cannot express that stop).
"""

from __future__ import annotations

import asyncio
import os

from learnat_cli.errors import GenerationError, LearnatError
from learnat_cli.models import Candidate
from learnat_cli.openai_http import (
    BadAnswer,
    OpenAIEndpoint,
    choice_logprob,
    int_or_zero,
    json_body,
)
from learnat_cli.prompts import cut_after_final


class ServedStudent(OpenAIEndpoint):
    """The student behind an OpenAI-compatible server (module docstring)."""

    who = "student"
    backend = "openai"

    def __init__(self, base_url: str | None, model: str | None, api_key: str | None = None, *,
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0,
                 budget_s: float | None = None, check: bool = True):
        if not base_url:
            raise LearnatError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)",
                               field="base_url")
        if not model:
            raise LearnatError("--backend openai needs --model: the name the server serves", field="model")
        super().__init__(base_url, model, api_key or os.environ.get("LEARNAT_STUDENT_API_KEY"),
                         concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                         backoff_s=backoff_s, budget_s=budget_s)
        self.spec = model
        self.batch_size = self.concurrency
        self.last_prompt_tokens = self.last_new_tokens = 0
        if check:
            self.check_server()

    def check_server(self) -> None:
        """``GET /models``: the server answers and serves :attr:`model` (module docstring)."""
        import httpx

        try:
            resp = httpx.get(f"{self.base_url}/models", headers=self.headers(),
                             timeout=min(30.0, self.timeout_s))
        except httpx.HTTPError as e:
            raise LearnatError(f"student server {self.base_url} is not reachable ({type(e).__name__}); is it "
                               "running?", field="base_url") from None
        if resp.status_code in (401, 403):
            raise LearnatError(f"student server {self.base_url}: HTTP {resp.status_code} (check --api-key)",
                               field="api_key")
        if resp.status_code != 200:
            return  # no /models route: the first request tells
        try:
            data = json_body(resp, self.label)
        except LearnatError:
            return
        items = data.get("data")
        names = [str(m.get("id")) for m in items if isinstance(m, dict)] if isinstance(items, list) else []
        if names and self.model not in names:
            raise LearnatError(f"the server at {self.base_url} does not serve {self.model!r}; it serves: "
                               f"{', '.join(names[:10])}", field="model")

    def on_call(self, data: dict | None) -> None:
        if data is not None and isinstance(data.get("usage"), dict):
            self.last_prompt_tokens += int_or_zero(data["usage"].get("prompt_tokens"))
            self.last_new_tokens += int_or_zero(data["usage"].get("completion_tokens"))

    async def _complete(self, messages: list[dict], n: int, max_new_tokens: int, temperature: float,
                        top_p: float, seed: int | None, logprobs: bool) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < n:
            body: dict = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                          "temperature": temperature, "n": n - len(out)}
            if temperature > 0:
                body["top_p"] = top_p
                if seed is not None:
                    body["seed"] = seed + len(out)
            if logprobs:
                body["logprobs"] = True
            try:
                data = await self.post(body)
            except BadAnswer as e:
                raise GenerationError(e.message) from None  # this prompt only
            choices = data.get("choices")
            got = []
            for c in choices if isinstance(choices, list) else []:
                msg = c.get("message") if isinstance(c, dict) else None
                text = msg.get("content") if isinstance(msg, dict) else None
                if isinstance(text, str):
                    got.append(Candidate(text, choice_logprob(c)))
            if not got:
                raise GenerationError(f"{self.label}: HTTP 200 but the answer has no choices with text")
            out.extend(got)
        return out[:n]

    def _run(self, calls: list[tuple]) -> list[list[Candidate]]:
        async def main():
            try:
                return await asyncio.gather(*(self._complete(*c) for c in calls), return_exceptions=True)
            finally:
                await self.aclose()

        self.last_prompt_tokens = self.last_new_tokens = 0
        results = asyncio.run(main())
        fatal = next((r for r in results
                      if isinstance(r, BaseException) and not isinstance(r, GenerationError)), None)
        if fatal is not None:
            raise fatal
        return results

    @staticmethod
    def _cut(text: str, stop_at_final: bool) -> str:
        return cut_after_final(text) if stop_at_final else text

    def _one(self, messages: list[dict], n: int, max_new_tokens: int, temperature: float, top_p: float,
             seed: int | None, logprobs: bool, stop_at_final: bool) -> list[Candidate]:
        (res,) = self._run([(messages, n, max_new_tokens, temperature, top_p, seed, logprobs)])
        if isinstance(res, BaseException):
            raise res
        return [Candidate(self._cut(c.text, stop_at_final), c.logprob) for c in res]

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 0.95, n: int = 1, seed: int | None = None,
             stop_at_final: bool = False) -> list[str]:
        """``n`` answers (greedy at temperature 0)."""
        return [c.text for c in self._one(messages, n, max_new_tokens, temperature, top_p, seed, False,
                                          stop_at_final)]

    def chat_batch(self, batch: list[list[dict]], *, max_new_tokens: int = 256,
                   stop_at_final: bool = False) -> list[str | GenerationError]:
        """Greedy answers, the prompts sent concurrently; a prompt the server refused gives its
        :class:`GenerationError` in its place (``ask`` records it), a server failure raises."""
        res = self._run([(m, 1, max_new_tokens, 0.0, 1.0, None, False) for m in batch])
        return [r if isinstance(r, GenerationError) else self._cut(r[0].text, stop_at_final) for r in res]

    def sample(self, messages: list[dict], n: int = 1, *, temperature: float = 0.0, top_p: float = 0.95,
               seed: int | None = None, max_new_tokens: int = 256,
               stop_at_final: bool = False) -> list[Candidate]:
        """``n`` candidates with mean log-probabilities when the server reports them (module docstring)."""
        if n < 1:
            raise LearnatError("n must be at least 1", field="n")
        if temperature <= 0 and n > 1:
            raise LearnatError("several samples need a temperature above 0", field="temperature")
        return self._one(messages, n, max_new_tokens, temperature, top_p, seed, True, stop_at_final)
