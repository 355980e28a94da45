"""Issue 14: the served student (``ask --backend openai``) against a real OpenAI-protocol server on loopback,
and execution-guided self-consistency (``ask --samples N``): the vote over executed candidates, prompt-prefill
sharing in the transformers and CTranslate2 samplers, and the bad inputs (``--samples 0``, a server that is
down, an unknown model, garbage answers for one question)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loopback import completion, reply

from learnat_cli.db import execute
from learnat_cli.errors import LearnatError
from learnat_cli.stages.ask import vote

typer = pytest.importorskip("typer")
from typer.testing import CliRunner  # noqa: E402

from learnat_commands.main import app  # noqa: E402

runner = CliRunner()


class StudentServer:
    """An OpenAI-protocol server: ``GET /models`` lists ``models``; ``POST /chat/completions`` answers with
    ``answer(question, body) -> list[(text, logprob)] | ("garbage", None) | int`` (an HTTP status)."""

    def __init__(self, answer, models=("student",)):
        self.answer, self.models = answer, list(models)
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, raw, kind="application/json"):
                reply(self, status, raw, kind)

            def do_GET(self):
                if self.path.endswith("/models"):
                    data = {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.models]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(0.05)
                    user = [m["content"] for m in body["messages"] if m["role"] == "user"][0]
                    q = user.split("Question:")[-1].strip().splitlines()[0].strip()
                    got = outer.answer(q, body)
                    if isinstance(got, int):
                        self._send(got, b'{"error": {"message": "context length exceeded"}}')
                    elif got == "garbage":
                        self._send(200, b"<html>oops</html>", "text/html")
                    else:
                        n = body.get("n", 1)
                        lps = [lp for _, lp in got] if body.get("logprobs") else None
                        self._send(200, completion([t for t, _ in got], n, {
                            "prompt_tokens": 10, "completion_tokens": 5 * n}, lps))
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


GOOD = {
    "How many books are there?": "SELECT COUNT(*) FROM books",
    "List the titles of all books.": "SELECT title FROM books",
}


def _final(sql: str) -> str:
    return f"Final SQL: {sql}\n"


def _rows(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_served_student_answers_a_batch_concurrently_and_records_a_refused_prompt(sample_db, tmp_path):
    qs = [{"id": f"q{i}", "question": q} for i, q in enumerate(
        ["How many books are there?", "List the titles of all books.", "Too long a question",
         "Garbage please"])]
    qs += [{"id": f"r{i}", "question": "How many books are there?"} for i in range(6)]
    inp = tmp_path / "q.jsonl"
    inp.write_text("".join(json.dumps(q) + "\n" for q in qs))

    def answer(q, body):
        if q.startswith("Too long"):
            return 400
        if q.startswith("Garbage"):
            return "garbage"
        return [(_final(GOOD[q]), -0.1)]

    out = tmp_path / "p.jsonl"
    with StudentServer(answer) as srv:
        args = ["ask", "--backend", "openai", "--base-url", srv.url, "--model", "student", "--db",
                str(sample_db), "--input", str(inp), "--concurrency", "3", "--decompose", "never", "-o",
                str(out)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        recs = {r["id"]: r for r in _rows(out)}
        assert len(recs) == len(qs)
        assert recs["q0"]["rows"] and recs["q0"]["error"] is None
        assert recs["q0"]["pred"] == GOOD[qs[0]["question"]]
        assert recs["q2"]["error"].startswith("student student: HTTP 400")  # recorded, not lost
        assert "not JSON" in recs["q3"]["error"]
        assert 1 < srv.max_in_flight <= 3  # concurrent, within the limit
        assert all(b["model"] == "student" and b["temperature"] == 0.0 for b in srv.requests)
        n_before = len(srv.requests)
        assert runner.invoke(app, args).exit_code == 0  # resumed: nothing left to ask
        assert len(srv.requests) == n_before and len(_rows(out)) == len(qs)


def test_served_student_down_unknown_model_and_dropped_mid_run(sample_db, tmp_path):
    with StudentServer(lambda q, b: [(_final("SELECT 1"), None)], models=["qwen-a", "qwen-b"]) as srv:
        res = runner.invoke(app, ["ask", "--backend", "openai", "--base-url", srv.url, "--model", "nope",
                                  "--db", str(sample_db), "How many books are there?"])
        assert res.exit_code == 2 and "does not serve 'nope'; it serves: qwen-a, qwen-b" in res.output
        url = srv.url
    res = runner.invoke(app, ["ask", "--backend", "openai", "--base-url", url, "--model", "qwen-a",
                              "--db", str(sample_db), "How many books are there?"])
    assert res.exit_code == 2 and "is not reachable" in res.output and "running?" in res.output
    res = runner.invoke(app, ["ask", "--backend", "openai", "--model", "x", "--db", str(sample_db), "q?"])
    assert res.exit_code == 2 and "needs --base-url" in res.output
    # the server goes away after answering: the run stops with a clear error, what was answered is kept
    from learnat_cli.engines_openai import ServedStudent

    with StudentServer(lambda q, b: [(_final("SELECT COUNT(*) FROM books"), None)]) as srv:
        lm = ServedStudent(srv.url, "student", max_retries=1, backoff_s=0.01, timeout_s=2)
        assert lm.chat([{"role": "user", "content": "Question: x"}]) == [_final("SELECT COUNT(*) FROM books")]
    with pytest.raises(LearnatError, match="giving up after 2 attempts"):
        lm.chat_batch([[{"role": "user", "content": "Question: x"}]])


def test_vote_groups_by_result_and_breaks_ties(sample_db):
    def run(sql):
        return (sql, execute(sample_db, sql))

    a = run("SELECT title, price FROM books WHERE price > 10")
    a_perm = run("SELECT price, title FROM books WHERE price > 10")  # same result, columns permuted
    b = run("SELECT title FROM books")
    failed = ("SELECT nope FROM books", None)
    groups, chosen = vote([b, a, failed, a_perm], [-0.1, -0.5, -0.01, -0.4])
    assert groups == [[0], [1, 3]] and chosen == 3  # the largest group; its most probable member
    # a tie of sizes: the group with the higher mean log-probability wins ...
    groups, chosen = vote([b, a], [-0.9, -0.2])
    assert chosen == 1
    # ... and with no log-probabilities, the greedy candidate's group
    groups, chosen = vote([b, a], [None, None])
    assert chosen == 0
    assert vote([failed, failed], [None, None]) == ([], None)
    # ORDER BY: results in a different order are different answers
    asc = run("SELECT title FROM books ORDER BY price")
    desc = run("SELECT title FROM books ORDER BY price DESC")
    assert len(vote([asc, desc], [None, None])[0]) == 2


def test_ask_samples_votes_over_executed_candidates(sample_db, tmp_path):
    """--samples 5 through a served student: one greedy and four sampled candidates (temperature, top-p and
    the seed reach the server), each executed; the majority result wins over the greedy answer."""
    wrong = _final("SELECT COUNT(*) FROM authors")
    right = _final("SELECT COUNT(*) FROM books")
    right2 = _final("SELECT COUNT(book_id) FROM books")

    def answer(q, body):
        if body["temperature"] == 0:
            return [(wrong, -0.05)]
        return [(right, -0.3), (right2, -0.4), (_final("SELECT nope FROM books"), -0.2), (right, -0.5)]

    out = tmp_path / "p.jsonl"
    with StudentServer(answer) as srv:
        res = runner.invoke(app, ["ask", "--backend", "openai", "--base-url", srv.url, "--model", "student",
                                  "--db", str(sample_db), "--samples", "5", "--temperature", "0.7",
                                  "--top-p", "0.9", "--seed", "4", "-o", str(out),
                                  "How many books are there?"])
        assert res.exit_code == 0, res.output
        sampled = [b for b in srv.requests if b["temperature"] > 0]
        assert sampled and sampled[0]["n"] == 4 and sampled[0]["top_p"] == 0.9 and sampled[0]["seed"] == 4
    (rec,) = _rows(out)
    assert rec["pred"] in ("SELECT COUNT(*) FROM books", "SELECT COUNT(book_id) FROM books")
    cands = rec["candidates"]
    assert len(cands) == 5 and cands[0]["greedy"] and cands[0]["sql"] == "SELECT COUNT(*) FROM authors"
    assert cands[3]["group"] is None and "nope" in cands[3]["error"]
    win = rec["vote"]["groups"][rec["vote"]["winner"]]
    assert sorted(win) == [1, 2, 4] and rec["vote"]["chosen"] == 1  # most probable of the winning group
    assert rec["vote"]["groups"][1 - rec["vote"]["winner"]] == [0]
    assert "3 of 5 candidates agree" in res.output


@pytest.mark.parametrize("bad,msg", [(["--samples", "0"], "--samples must be at least 1"),
                                     (["--samples", "3", "--temperature", "0"],
                                      "needs --temperature above 0"),
                                     (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
                                     (["--batch-size", "-1"], "--batch-size must be at least 1")])
def test_bad_sampling_options_are_one_line_errors(sample_db, bad, msg, tmp_path):
    inp = tmp_path / "q.jsonl"
    inp.write_text('{"id": "a", "question": "How many books are there?"}\n')
    res = runner.invoke(app, ["ask", "--db", str(sample_db), "--input", str(inp), "--backend", "openai",
                              "--base-url", "http://127.0.0.1:9/v1", "--model", "m", *bad])
    assert res.exit_code == 2 and msg in res.output and len(res.output.strip().splitlines()) == 1


def test_transformers_samples_share_the_prefill_and_report_model_logprobs(tiny_model_dir):
    import torch

    from learnat_cli.models import ChatModel

    lm = ChatModel(str(tiny_model_dir), device="cpu")
    msgs = [{"role": "user", "content": "Question: how many books?"}]
    (greedy,) = lm.sample(msgs, 1, max_new_tokens=12)
    assert greedy.text == lm.chat(msgs, max_new_tokens=12)[0]
    # a near-zero temperature samples the greedy path: the shared-prefill cache gives the same continuation
    near = lm.sample(msgs, 3, temperature=1e-4, top_p=1.0, seed=0, max_new_tokens=12)
    assert [c.text for c in near] == [greedy.text] * 3
    assert all(math.isclose(c.logprob, greedy.logprob, rel_tol=1e-4) for c in near)
    # the reported mean log-probability is the model's own (recomputed by one forward pass)
    enc = lm.tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    new = lm.tok(greedy.text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = lm.model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=lm.tok.pad_token_id)
    gen = out[:, enc["input_ids"].shape[1]:]
    with torch.no_grad():
        logits = lm.model(out).logits[0, enc["input_ids"].shape[1] - 1:-1]
    lp = torch.log_softmax(logits.float(), -1).gather(1, gen[0][:, None]).squeeze(1)
    keep = gen[0] != lm.tok.pad_token_id
    assert math.isclose(greedy.logprob, float(lp[keep].mean()), rel_tol=1e-3, abs_tol=1e-4)
    assert new.shape[1] >= 1
    sampled = lm.sample(msgs, 4, temperature=1.5, seed=1, max_new_tokens=12)
    assert len(sampled) == 4 and all(c.logprob is not None and c.logprob <= 0 for c in sampled)
    with pytest.raises(LearnatError, match="temperature above 0"):
        lm.sample(msgs, 2)


def test_ct2_samples_from_one_prefill(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    monkeypatch.setenv("LEARNAT_CACHE", str(tmp_path / "cache"))
    from learnat_cli.engines_ct2 import Ct2Generator

    g = Ct2Generator(str(tiny_model_dir), threads=1)
    msgs = [{"role": "user", "content": "Question: how many books?"}]
    (greedy,) = g.sample(msgs, 1, max_new_tokens=10)
    assert greedy.text == g.chat(msgs, max_new_tokens=10)[0] and greedy.logprob <= 0
    cands = g.sample(msgs, 5, temperature=1.2, seed=3, max_new_tokens=10)
    assert len(cands) == 5 and all(math.isfinite(c.logprob) for c in cands)
    assert g.batch_size >= 1
