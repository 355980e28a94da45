"""Teachers against real parts: an OpenAI-protocol HTTP server on loopback (retries on 429/5xx, 401), the disk
cache, the AST teacher, and a tiny local transformers model."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loopback import completion, reply

from learnat_cli.errors import LearnatError
from learnat_cli.sql import GoldAst
from learnat_cli.synthesis.teachers import (
    AstTeacher,
    DiskCache,
    LocalTeacher,
    OpenAITeacher,
    State,
    make_teacher,
    parse_proposal,
)


class ChatServer:
    """A loopback server speaking the OpenAI chat-completions protocol, scripted per request."""

    def __init__(self, script, max_choices=None):
        self.script = list(script)  # items: ("ok", [texts]) | (status, headers)
        self.max_choices = max_choices  # emulate servers that ignore `n`
        self.requests = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                outer.requests.append({"path": self.path, "body": body, "auth": auth})
                kind, arg = outer.script.pop(0) if outer.script else ("ok", ["SQL: SELECT 1"])
                if kind == "ok":
                    n = body.get("n", 1)
                    if outer.max_choices:
                        n = min(n, outer.max_choices)
                    reply(self, 200, completion(arg, n, {"total_tokens": 10 * n}))
                else:
                    reply(self, kind, b'{"error": {"message": "nope"}}', None, arg)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


STATE = State(question="How many books?", schema="CREATE TABLE books (id INTEGER)",
              gold="SELECT COUNT(*) FROM books WHERE id > 3",
              steps=[("Which books?", "SELECT id FROM books")])


def test_openai_client_retries_429_and_500_then_parses(tmp_path):
    script = [(429, {"Retry-After": "0"}), (500, {}),
              ("ok", ["Sub-question: Which books have id above 3?\nSQL: SELECT id FROM books WHERE id > 3;"])]
    with ChatServer(script) as srv:
        t = OpenAITeacher(srv.url, "glm-4-plus", "sk-test", backoff_s=0.01, cache=DiskCache(tmp_path))
        props = asyncio.run(t.propose(STATE, 3))
        asyncio.run(t.aclose())
    assert [p.sql for p in props] == ["SELECT id FROM books WHERE id > 3"] * 3
    assert props[0].question == "Which books have id above 3?"
    assert t.usage.calls == 3 and t.usage.tokens == 30
    req = srv.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "glm-4-plus" and req["body"]["n"] == 3
    assert "Reference SQL: SELECT COUNT(*) FROM books WHERE id > 3" in req["body"]["messages"][1]["content"]
    assert "Step 1: Which books?" in req["body"]["messages"][1]["content"]


def test_cache_makes_a_rerun_free(tmp_path):
    with ChatServer([("ok", ["SQL: SELECT 1"])]) as srv:
        t1 = OpenAITeacher(srv.url, "m", cache=DiskCache(tmp_path))
        asyncio.run(t1.propose(STATE, 2))
        t2 = OpenAITeacher(srv.url, "m", cache=DiskCache(tmp_path))
        props = asyncio.run(t2.propose(STATE, 2))
    assert len(srv.requests) == 1 and t2.usage.calls == 0 and t2.usage.cached == 1
    assert [p.sql for p in props] == ["SELECT 1", "SELECT 1"]


def test_server_ignoring_n_is_topped_up():
    script = [("ok", ["SQL: SELECT 1"]), ("ok", ["SQL: SELECT 2"]), ("ok", ["SQL: SELECT 3"])]
    with ChatServer(script, max_choices=1) as srv:
        t = OpenAITeacher(srv.url, "m")
        texts = asyncio.run(t.chat([{"role": "user", "content": "x"}], 3))
    assert texts == ["SQL: SELECT 1", "SQL: SELECT 2", "SQL: SELECT 3"]
    assert [r["body"]["n"] for r in srv.requests] == [3, 2, 1]


def test_401_is_a_clear_error_without_retries():
    with ChatServer([(401, {})]) as srv:
        t = OpenAITeacher(srv.url, "m", "bad", backoff_s=0.01)
        with pytest.raises(LearnatError, match="HTTP 401.*API key"):
            asyncio.run(t.propose(STATE, 1))
    assert len(srv.requests) == 1


def test_gives_up_after_retries():
    with ChatServer([(503, {})] * 3) as srv:
        t = OpenAITeacher(srv.url, "m", max_retries=2, backoff_s=0.01)
        with pytest.raises(LearnatError, match="giving up after 3 attempts"):
            asyncio.run(t.propose(STATE, 1))


def test_presets_need_keys(monkeypatch):
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    with pytest.raises(LearnatError, match="ZHIPUAI_API_KEY"):
        make_teacher("glm-4-plus")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "k")
    t = make_teacher("glm-4-plus")
    assert t.base_url == "https://open.bigmodel.cn/api/paas/v4" and t.model == "glm-4-plus"
    with pytest.raises(LearnatError, match="unknown teacher"):
        make_teacher("nonsense")


def test_parse_proposal_variants():
    assert parse_proposal("```sql\nSELECT a FROM t\n```").sql == "SELECT a FROM t"
    p = parse_proposal("Step 2: Which are red?\nSQL: SELECT id FROM cards WHERE color = 'R';")
    assert (p.question, p.sql) == ("Which are red?", "SELECT id FROM cards WHERE color = 'R'")
    assert parse_proposal("I do not know.") is None


def test_ast_teacher_steps_are_progressive_and_perturbations_are_not():
    gold = ("SELECT T1.title FROM books AS T1 JOIN order_items AS T2 ON T1.book_id = T2.book_id "
            "WHERE T2.quantity > 1 GROUP BY T1.book_id ORDER BY SUM(T2.quantity) DESC LIMIT 1")
    g = GoldAst(gold)
    t = AstTeacher()
    steps: list = []
    for _ in range(6):
        props = asyncio.run(t.propose(State(question="q?", schema="", gold=gold, steps=steps), 4))
        ladder = [p for p in props if p.kind not in ("perturbed", "repeat")]
        assert all(not g.contains(p.sql) for p in props if p.kind == "perturbed")
        if not ladder:
            break
        assert g.contains(ladder[0].sql)
        steps.append((ladder[0].question, ladder[0].sql))
        if g.matches(ladder[0].sql):
            break
    assert g.matches(steps[-1][1]) and steps[-1][0] == "q?"
    assert len(steps) >= 3


def test_local_teacher_with_tiny_model(tiny_model_dir, tmp_path):
    t = LocalTeacher(str(tiny_model_dir), max_new_tokens=12, cache=DiskCache(tmp_path))
    props = asyncio.run(t.propose(STATE, 2))
    assert len(props) == 2 and t.usage.calls == 1 and t.usage.tokens > 0
    # a random model writes garbage: it still comes back as proposals, which the pruner classifies invalid
    from learnat_cli.synthesis.mcts import classify

    g = GoldAst(STATE.gold)
    assert [classify(g, p.sql, frozenset())[0] for p in props] == ["invalid", "invalid"]
    again = LocalTeacher(str(tiny_model_dir), max_new_tokens=12, cache=DiskCache(tmp_path))
    assert [p.sql for p in asyncio.run(again.propose(STATE, 2))] == [p.sql for p in props]
    assert again.usage.calls == 0
