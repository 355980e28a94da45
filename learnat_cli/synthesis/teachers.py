"""Teachers: who proposes the next subtask of a decomposition (LearNAT sec. 3.2, decomposition synthesis).

One interface, :class:`Teacher` — ``await teacher.propose(state, k)`` returns up to ``k`` :class:`Proposal`
(sub-question + SQL) — with three backends, chosen by :func:`make_teacher` from a spec string:

- ``glm-4-plus`` (the paper's teacher, Zhipu's OpenAI-compatible API, key ``ZHIPUAI_API_KEY``),
  ``openai:MODEL`` (``OPENAI_API_KEY``/``OPENAI_BASE_URL``), or any OpenAI-compatible server (vLLM, llama.cpp,
  Ollama) with ``url=``/``model=``: :class:`OpenAITeacher`. Async (httpx), a concurrency limit, retries with
  exponential backoff and jitter on 429/5xx/timeouts (``Retry-After`` honoured), a clear error on 401/403. The
  k candidates come from one request with ``n=k`` at temperature > 0; a server that ignores ``n`` is topped up
  with more requests.
- ``local`` (the embedded default Qwen2.5-Coder-0.5B) or ``hf:PATH``: :class:`LocalTeacher`, transformers
  sampling.
- ``ast``: :class:`AstTeacher` derives steps from the gold SQL's own AST — innermost sub-queries first, then
  the FROM/JOIN part, the filter, the grouping, HAVING, and finally ordering/limit (the full gold) — each with
  a templated sub-question, plus perturbed variants (a wrong value, a wrong column, a repeated step) that the
  pruner must reject. It needs no LLM, so synthesis runs offline and free. Its sub-questions differ from an
  LLM's: they are literal templates over schema names and SQL fragments ("Which books rows satisfy price >
  10?"), not paraphrased natural language, and its steps always follow the clause order of the gold query.

Every LLM call is cached on disk under ``$LEARNAT_CACHE/teacher`` keyed by sha256(model, messages, sampling
settings), so a rerun or a resumed run costs no second call. Prompt templates (``teacher_system``,
``teacher_user``) live in ``learnat_cli/prompts/`` and can be overridden (``LEARNAT_PROMPTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
from pathlib import Path

from learnat_cli.errors import LearnatError
from learnat_cli.paths import cache_dir
from learnat_cli.prompts import extract_sql, one_line, template
from learnat_cli.synthesis.ast_teacher import AstTeacher
from learnat_cli.synthesis.protocol import Proposal, State, Teacher, TeacherFatal, Usage

__all__ = ["AstTeacher", "DiskCache", "LocalTeacher", "OpenAITeacher", "Proposal", "State", "Teacher",
           "TeacherFatal", "Usage", "default_cache", "make_teacher", "parse_proposal", "to_proposals"]

PRESETS = {
    # name: (base_url, model, api-key env var)
    "glm-4-plus": ("https://open.bigmodel.cn/api/paas/v4", "glm-4-plus", "ZHIPUAI_API_KEY"),
}



# ---------------------------------------------------------------------------------------------------------
# Prompt and answer format


def teacher_messages(state: State, prompts_dir=None) -> list[dict[str, str]]:
    steps = "".join(f"Step {i}: {q}\nSQL: {one_line(s)}\n" for i, (q, s) in enumerate(state.steps, 1))
    steps = steps or "(none)\n"
    user = template("teacher_user", prompts_dir).format(
        schema=state.schema, evidence=f"Evidence: {state.evidence}\n" if state.evidence else "",
        question=state.question, gold=one_line(state.gold), steps=steps, next_index=len(state.steps) + 1)
    return [{"role": "system", "content": template("teacher_system", prompts_dir)},
            {"role": "user", "content": user}]


_SUBQ = re.compile(r"^\s*(?:sub-?question|step\s*\d*)\s*[:.]\s*(.+)$", re.I | re.M)


def parse_proposal(text: str) -> Proposal | None:
    """``Sub-question: ...`` / ``SQL: ...`` (code fences tolerated; the SQL by
    :func:`learnat_cli.prompts.extract_sql`). None when no SQL is found."""
    sql = extract_sql(text)
    if sql is None:
        return None
    m_q = _SUBQ.search(re.sub(r"```(?:sql)?", "", text or ""))
    return Proposal(question=m_q.group(1).strip() if m_q else "", sql=sql)


def to_proposals(texts: list[str]) -> list[Proposal]:
    """Parsed proposals; an answer without a recognisable SQL is kept as is (the pruner marks it invalid)."""
    out = []
    for t in texts:
        p = parse_proposal(t)
        out.append(p if p is not None else Proposal(question="", sql=t.strip(), kind="unparsed"))
    return out


# ----------------------------------------------------------------------------------------------------------
# Disk cache


class DiskCache:
    def __init__(self, folder: Path | None):
        self.folder = folder

    def key(self, payload: dict) -> str:
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        if self.folder is None:
            return None
        p = self.folder / key[:2] / f"{key}.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))["texts"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, key: str, texts: list[str]) -> None:
        if self.folder is None:
            return
        d = self.folder / key[:2]
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"texts": texts}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, d / f"{key}.json")


def default_cache(enabled: bool = True, folder: str | None = None) -> DiskCache:
    if not enabled:
        return DiskCache(None)
    return DiskCache(Path(folder) if folder else cache_dir("teacher"))


# ----------------------------------------------------------------------------------------------------------
# OpenAI-compatible chat endpoints


def _json_body(resp, model: str) -> dict:
    """The JSON object of an HTTP 200 answer; HTML, malformed JSON or another JSON type is a clear error."""
    kind = (resp.headers.get("content-type") or "?").split(";")[0]
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        head = resp.text[:60].replace("\n", " ")
        raise LearnatError(f"teacher {model}: HTTP 200 but the body is not JSON ({kind}: {head!r})") from None
    if not isinstance(data, dict):
        raise LearnatError(f"teacher {model}: HTTP 200 but the body is a JSON {type(data).__name__}, "
                           "not an OpenAI chat completion object")
    return data


def _choice_texts(data: dict) -> list[str]:
    choices = data.get("choices")
    if not isinstance(choices, list):
        return []
    out = []
    for c in choices:
        msg = c.get("message") if isinstance(c, dict) else None
        text = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(text, str):
            out.append(text)
    return out


def _int(v) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


class OpenAITeacher(Teacher):
    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, concurrency: int = 8,
                 temperature: float = 0.8, max_tokens: int = 512, timeout_s: float = 60.0,
                 max_retries: int = 6, backoff_s: float = 1.0, budget_s: float | None = None,
                 cache: DiskCache | None = None, prompts_dir=None):
        super().__init__()
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.budget_s = budget_s if budget_s is not None else 5 * timeout_s
        self.backoff_s = backoff_s
        self.cache = cache or DiskCache(None)
        self.prompts_dir = prompts_dir
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._client = None

    def _http(self):
        import httpx

        if self._client is None:
            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(headers=headers, timeout=self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def chat(self, messages: list[dict], n: int) -> list[str]:
        """``n`` completions for ``messages`` (cached)."""
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "n": n}
        key = self.cache.key({"backend": "openai", "url": self.base_url, **payload})
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cached += 1
            return hit
        texts: list[str] = []
        while len(texts) < n:
            body = dict(payload, n=n - len(texts))
            data = await self._post(body)
            got = _choice_texts(data)
            if not got:
                raise LearnatError(f"teacher {self.model}: HTTP 200 but the answer has no choices with text")
            texts.extend(got)
        texts = texts[:n]
        self.cache.put(key, texts)
        return texts

    async def _post(self, body: dict) -> dict:
        """One chat completion, retried on 429/5xx/timeouts. Each attempt has a total deadline
        (``timeout_s``: a server dripping bytes cannot hold it longer) and all attempts with their back-off
        share one budget (``budget_s``)."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        loop = asyncio.get_running_loop()
        t_end = loop.time() + self.budget_s
        attempt = 0
        while True:
            attempt += 1
            left = t_end - loop.time()
            async with self._sem:
                try:
                    resp = await asyncio.wait_for(self._http().post(url, json=body),
                                                  timeout=max(0.001, min(self.timeout_s, left)))
                    status = resp.status_code
                except (asyncio.TimeoutError, httpx.TimeoutException, httpx.TransportError) as e:
                    resp, status = None, None
                    err = "no complete answer within the deadline" if isinstance(e, asyncio.TimeoutError) \
                        else type(e).__name__
            self.usage.calls += 1
            if status == 200:
                data = _json_body(resp, self.model)
                self.usage.tokens += _int((data.get("usage") or {}).get("total_tokens")
                                          if isinstance(data.get("usage"), dict) else 0)
                return data
            if status in (401, 403):
                raise TeacherFatal(f"teacher {self.model} at {self.base_url}: HTTP {status} "
                                   f"(check the API key: --api-key or the preset's environment variable)")
            retryable = status is None or status == 429 or status >= 500
            if not retryable:
                detail = resp.text[:200].replace("\n", " ") if resp is not None else ""
                raise LearnatError(f"teacher {self.model}: HTTP {status}: {detail}")
            what = f"HTTP {status}" if status else err
            if attempt > self.max_retries:
                raise LearnatError(f"teacher {self.model}: giving up after {attempt} attempts ({what})")
            delay = self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            if resp is not None and resp.headers.get("retry-after"):
                with contextlib.suppress(ValueError):
                    delay = max(delay, float(resp.headers["retry-after"]))
            delay = min(delay, 60.0)
            if loop.time() + delay >= t_end:
                raise LearnatError(f"teacher {self.model}: giving up after {attempt} attempts in "
                                   f"{self.budget_s:g} s ({what})")
            await asyncio.sleep(delay)

    async def propose(self, state: State, k: int) -> list[Proposal]:
        texts = await self.chat(teacher_messages(state, self.prompts_dir), k)
        return to_proposals(texts)


# ----------------------------------------------------------------------------------------------------------
# Local transformers model


class LocalTeacher(Teacher):
    """Samples proposals from a local causal LM through :class:`learnat_cli.models.ChatModel`; runs generation
    in a thread."""

    def __init__(self, model: str | None = None, *, temperature: float = 0.8, max_new_tokens: int = 160,
                 cache: DiskCache | None = None, prompts_dir=None, seed: int = 0, device: str = "auto"):
        super().__init__()
        self.spec = model
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.cache = cache or DiskCache(None)
        self.prompts_dir = prompts_dir
        self.seed = seed
        self.device = device
        self._lm = None
        self._lock = asyncio.Lock()

    def _load(self):
        if self._lm is None:
            from learnat_cli.models import ChatModel

            self._lm = ChatModel(self.spec, device=self.device)
            self.name = f"local:{self.spec or 'default'}"
        return self._lm

    def _generate(self, messages: list[dict], k: int) -> list[str]:
        lm = self._load()
        texts = lm.chat(messages, max_new_tokens=self.max_new_tokens, temperature=self.temperature, n=k,
                        seed=self.seed)
        self.usage.tokens += lm.last_prompt_tokens + lm.last_new_tokens
        return texts

    async def propose(self, state: State, k: int) -> list[Proposal]:
        messages = teacher_messages(state, self.prompts_dir)
        key = self.cache.key({"backend": "local", "model": str(self.spec), "messages": messages, "k": k,
                              "temperature": self.temperature, "max_new_tokens": self.max_new_tokens,
                              "seed": self.seed})
        texts = self.cache.get(key)
        if texts is None:
            async with self._lock:
                texts = await asyncio.to_thread(self._generate, messages, k)
            self.usage.calls += 1
            self.cache.put(key, texts)
        else:
            self.usage.cached += 1
        return to_proposals(texts)


def make_teacher(spec: str, *, url: str | None = None, model: str | None = None,
                 api_key: str | None = None, concurrency: int = 8, temperature: float = 0.8,
                 cache: DiskCache | None = None, dialect: str = "sqlite", seed: int = 0,
                 prompts_dir=None) -> Teacher:
    """Build a teacher from ``--teacher``: ``ast``, ``local``, ``hf:PATH``, ``glm-4-plus``,
    ``openai:MODEL``, or any model name served at ``--teacher-url``."""
    if spec == "ast":
        return AstTeacher(dialect=dialect, seed=seed)
    if spec == "local" or spec.startswith("hf:"):
        return LocalTeacher(None if spec == "local" else spec[3:], temperature=temperature, cache=cache,
                            prompts_dir=prompts_dir, seed=seed)
    if spec in PRESETS and not url:
        base, name, env = PRESETS[spec]
        key = api_key or os.environ.get(env)
        if not key:
            raise TeacherFatal(f"--teacher {spec} needs an API key: set {env} or pass --api-key")
        return OpenAITeacher(base, model or name, key, concurrency=concurrency, temperature=temperature,
                             cache=cache, prompts_dir=prompts_dir)
    if spec.startswith("openai:") and not url:
        base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise TeacherFatal("--teacher openai:MODEL needs an API key: set OPENAI_API_KEY or pass "
                               "--api-key")
        return OpenAITeacher(base, spec.split(":", 1)[1], key, concurrency=concurrency,
                             temperature=temperature, cache=cache, prompts_dir=prompts_dir)
    if url:
        name = model or (spec.split(":", 1)[1] if ":" in spec else spec)
        return OpenAITeacher(url, name, api_key or os.environ.get("LEARNAT_TEACHER_API_KEY"),
                             concurrency=concurrency, temperature=temperature, cache=cache,
                             prompts_dir=prompts_dir)
    raise TeacherFatal(f"unknown teacher {spec!r}: use ast, local, hf:PATH, glm-4-plus, openai:MODEL, "
                       "or --teacher-url URL for any OpenAI-compatible server", field="teacher")
