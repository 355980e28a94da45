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
import hashlib
import json
import os
import re
from pathlib import Path

from learnat_cli.errors import LearnatError
from learnat_cli.openai_http import OpenAIEndpoint, choice_texts, int_or_zero
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


class OpenAITeacher(OpenAIEndpoint, Teacher):
    """A teacher behind an OpenAI-compatible endpoint (:mod:`learnat_cli.openai_http`: retries, deadlines,
    concurrency limit)."""

    who = "teacher"
    fatal = TeacherFatal

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, concurrency: int = 8,
                 temperature: float = 0.8, max_tokens: int = 512, timeout_s: float = 60.0,
                 max_retries: int = 6, backoff_s: float = 1.0, budget_s: float | None = None,
                 cache: DiskCache | None = None, prompts_dir=None):
        Teacher.__init__(self)
        OpenAIEndpoint.__init__(self, base_url, model, api_key, concurrency=concurrency, timeout_s=timeout_s,
                                max_retries=max_retries, backoff_s=backoff_s, budget_s=budget_s)
        self.name = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache = cache or DiskCache(None)
        self.prompts_dir = prompts_dir

    def on_call(self, data: dict | None) -> None:
        self.usage.calls += 1
        if data is not None and isinstance(data.get("usage"), dict):
            self.usage.tokens += int_or_zero(data["usage"].get("total_tokens"))

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
            data = await self.post(body)
            got = choice_texts(data)
            if not got:
                raise LearnatError(f"teacher {self.model}: HTTP 200 but the answer has no choices with text")
            texts.extend(got)
        texts = texts[:n]
        self.cache.put(key, texts)
        return texts

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
    """Build a teacher from ``--teacher``: ``ast`` (``ast:fold-joins``: without the join-only step),
    ``local``, ``hf:PATH``, ``glm-4-plus``, ``openai:MODEL``, or any model name served at
    ``--teacher-url``."""
    if spec in ("ast", "ast:fold-joins"):
        return AstTeacher(dialect=dialect, seed=seed, join_step=spec == "ast")
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
