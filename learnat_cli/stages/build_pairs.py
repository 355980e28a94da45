"""``learnat build-pairs``: preference pairs and SFT rows from decomposition trees (LearNAT sec. 3.3: SFT on
successful trajectories, then MDPO on AST-margin pairs).

Input records: :class:`~learnat_cli.records.TreeRecord` (``learnat decompose`` output, or its ``--trees``
file). Output records: :class:`~learnat_cli.records.PreferencePair`, or with ``sft=True`` :class:`SftRow`.

Prompt format (the student sees the same text at inference, :mod:`learnat_cli.prompts`):
- ``prompt`` is the chat prompt ``[system, user]`` (schema, evidence, question) as a list of messages (TRL's
  conversational format);
- ``chosen``/``rejected`` are the assistant text *from the start of the answer*: the steps already taken
  (``Step 1: ... SQL: ...``) followed by the candidate step. The shared prefix has identical tokens in both,
  so its log-ratio terms cancel in DPO/MDPO and the preference is exactly about the candidate step at that
  node.

Pairs: at every tree node with at least two children, the *chosen* child is the progressive child with the
highest AST reward (terminal children reward 1); each sibling with a lower reward is a *rejected* one —
invalid/redundant siblings count with reward 0. ``margin = R(chosen) − R(rejected)``, in [0, 1] on the same
scale as the reward (α·node coverage + (1−α)·pq-gram similarity); MDPO multiplies it by ``gamma``. Pairs with
a margin below ``min_margin`` are dropped; at most ``max_per_node`` rejected siblings per node (largest
margins first).

SFT rows: ``messages = [system, user, assistant]``. Which prompt a row trains follows ``ask`` exactly
(:func:`learnat_cli.prompts.student_prompt`, same rule, same ``--decompose`` mode and threshold): a question
the fast path answers directly (``auto``, complexity at or below the threshold, or ``never``) gets the direct
prompt and the one-line answer ``Final SQL: <gold>``; the others get the decomposition prompt and
``format_answer(steps, gold)`` (only trajectories that reached the gold unless ``include_failed``). Why both:
with an adapter, ``ask --decompose auto`` sends simple questions to the direct prompt, and on the untrained
0.5B the direct prompt is the stronger one (47% vs 31% EX on 100 Spider dev questions, docs/BENCHMARKS.md);
training only decompositions would leave the fast path's prompt untrained, and forcing decomposition with an
adapter would give up the fast path.

Demonstrations (``index``: a :class:`~learnat_cli.stages.index.DemoIndex` over a folder or a pool file): the
``k`` nearest other examples (never the example itself: same id or same question) in the layout ``ask`` shows
them, in SFT rows and pair prompts alike, so adaptive demonstration reasoning (sec. 3.4) is trained, not only
used. Report: :class:`PairsReport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from learnat_cli.errors import LearnatError
from learnat_cli.jsonl import display_name, parse_record, read_jsonl
from learnat_cli.prompts import (
    Demo,
    format_answer,
    format_step,
    retrieve_demos,
    student_messages,
    student_prompt,
)
from learnat_cli.records import PreferencePair, SftRow, TreeRecord


@dataclass
class PairsConfig:
    min_margin: float = 0.05
    max_per_node: int = 3
    include_failed: bool = False
    decompose: str = "auto"  # --sft: which prompt each row trains, as ask --decompose
    fast_threshold: int = 1
    k_demos: int = 3  # demonstrations per prompt when an index is given

    def check(self) -> None:
        """Options checked before any work starts."""
        from learnat_cli.prompts import MODES

        if self.decompose not in MODES:
            raise LearnatError(f"--decompose must be one of {', '.join(MODES)}", field="decompose")
        for name in ("max_per_node", "k_demos"):
            if getattr(self, name) < 0:
                raise LearnatError("must not be negative", field=name)


@dataclass
class PairsReport:
    trees: int = 0
    rows: int = 0
    direct: int = 0  # SFT rows in the direct (fast path) format
    decomposed: int = 0

    def summary(self, sft: bool) -> str:
        if sft:
            return f"wrote {self.rows} SFT rows ({self.decomposed} decomposed, {self.direct} direct)"
        return f"wrote {self.rows} preference pairs from {self.trees} trees"


def _demos(rec: TreeRecord, cfg: PairsConfig, index) -> list[Demo]:
    return [d for _, d in retrieve_demos(index, rec.question, cfg.k_demos, (rec.id,))]


def _reward(node) -> float:
    if node.status != "progressive":
        return 0.0
    return 1.0 if node.terminal else float(node.reward)


def pairs_from_tree(rec: TreeRecord, cfg: PairsConfig, index=None) -> Iterator[PreferencePair]:
    by_id = {n.node_id: n for n in rec.nodes}
    kids: dict[int, list] = {}
    for n in rec.nodes:
        if n.parent is not None:
            kids.setdefault(n.parent, []).append(n)
    prompt = student_messages(rec.question, rec.schema_text or "", rec.evidence, _demos(rec, cfg, index))
    for parent_id, children in kids.items():
        prog = [c for c in children if c.status == "progressive" and c.step is not None]
        if not prog or len(children) < 2:
            continue
        chosen = max(prog, key=lambda c: (_reward(c), -c.node_id))
        r_w = _reward(chosen)
        rejected = sorted((c for c in children if c is not chosen and c.step is not None),
                          key=lambda c: (_reward(c), c.node_id))
        # previous steps: path from the root to the parent
        prefix_nodes = []
        p = by_id.get(parent_id)
        while p is not None and p.parent is not None:
            prefix_nodes.append(p)
            p = by_id.get(p.parent)
        prefix_nodes.reverse()
        prefix = "".join(format_step(i, n.step.question, n.step.sql)
                         for i, n in enumerate(prefix_nodes, 1) if n.step is not None)
        idx = len(prefix_nodes) + 1
        made = 0
        for rj in rejected:
            margin = r_w - _reward(rj)
            if margin < cfg.min_margin or made >= cfg.max_per_node:
                continue
            made += 1
            yield PreferencePair(
                id=f"{rec.id}:{parent_id}:{chosen.node_id}>{rj.node_id}", prompt=prompt,
                chosen=prefix + format_step(idx, chosen.step.question, chosen.step.sql),
                rejected=prefix + format_step(idx, rj.step.question, rj.step.sql),
                margin=round(margin, 6), example_id=rec.id, node_id=parent_id,
                chosen_status=chosen.status, rejected_status=rj.status,
                chosen_reward=round(r_w, 6), rejected_reward=round(_reward(rj), 6))


def sft_from_tree(rec: TreeRecord, cfg: PairsConfig, index=None) -> Iterator[SftRow]:
    messages, dec = student_prompt(rec.question, rec.schema_text or "", rec.evidence, _demos(rec, cfg, index),
                                   cfg.decompose, cfg.fast_threshold)
    if not dec:
        final = rec.gold or (rec.steps[-1].sql if rec.steps and rec.reached_gold else None)
        if not final:
            return
        messages.append({"role": "assistant", "content": format_answer([], final)})
        yield SftRow(id=rec.id, messages=messages, reached_gold=rec.reached_gold, decomposed=False)
        return
    if not rec.steps or not (rec.reached_gold or cfg.include_failed):
        return
    final = rec.gold or rec.steps[-1].sql
    answer = format_answer([(s.question, s.sql) for s in rec.steps], final)
    messages.append({"role": "assistant", "content": answer})
    yield SftRow(id=rec.id, messages=messages, reached_gold=rec.reached_gold, decomposed=True)


def read_trees(path: str, sft: bool = False) -> Iterator[TreeRecord]:
    """Tree records of ``path``, checked (pairs need the tree nodes)."""
    name = display_name(path)
    for line, obj in read_jsonl(path):
        rec = parse_record(TreeRecord, obj, name, line)
        if not sft and not rec.nodes:
            raise LearnatError("record has no tree nodes (run decompose without --slim, or use its --trees "
                               "file)", file=name, line=line, field="nodes")
        yield rec


def build_pairs(records: Iterable[TreeRecord], cfg: PairsConfig, report: PairsReport, *, sft: bool = False,
                index=None) -> Iterator[PreferencePair | SftRow]:
    """The ``learnat build-pairs`` stage: preference pairs (or SFT rows) from tree records."""
    for rec in records:
        report.trees += 1
        for row in (sft_from_tree(rec, cfg, index) if sft else pairs_from_tree(rec, cfg, index)):
            report.rows += 1
            if sft:
                dec = bool(getattr(row, "decomposed", False))
                report.decomposed += dec
                report.direct += not dec
            yield row


def build(path: str, cfg: PairsConfig, sft: bool = False, index=None,
          report: PairsReport | None = None) -> Iterator[Any]:
    yield from build_pairs(read_trees(path, sft), cfg, report or PairsReport(), sft=sft, index=index)
