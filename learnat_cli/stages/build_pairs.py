"""``learnat build-pairs``: preference pairs and SFT rows from decomposition trees (LearNAT sec. 3.3: SFT on
successful trajectories, then MDPO on AST-margin pairs).

Input records: :class:`~learnat_cli.records.TreeRecord` (``learnat decompose`` output, or its ``--trees`` file).
Output records: :class:`~learnat_cli.records.PreferencePair`, or with ``sft=True`` :class:`SftRow`.

Prompt format (the student sees the same text at inference, :mod:`learnat_cli.prompts`):
- ``prompt`` is the chat prompt ``[system, user]`` (schema, evidence, question) as a list of messages (TRL's
  conversational format);
- ``chosen``/``rejected`` are the assistant text *from the start of the answer*: the steps already taken
  (``Step 1: ... SQL: ...``) followed by the candidate step. The shared prefix has identical tokens in both, so its
  log-ratio terms cancel in DPO/MDPO and the preference is exactly about the candidate step at that node.

Pairs: at every tree node with at least two children, the *chosen* child is the progressive child with the
highest AST reward (terminal children reward 1); each sibling with a lower reward is a *rejected* one —
invalid/redundant siblings count with reward 0. ``margin = R(chosen) − R(rejected)``, in [0, 1] on the same scale
as the reward (α·node coverage + (1−α)·pq-gram similarity); MDPO multiplies it by ``gamma``. Pairs with a margin
below ``min_margin`` are dropped; at most ``max_per_node`` rejected siblings per node (largest margins first).

SFT rows: ``messages = [system, user, assistant]`` with the assistant answer ``format_answer(steps, final)``
where ``final`` is the gold SQL; only trajectories that reached the gold unless ``include_failed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from learnat_cli.jsonl import display_name, parse_record, read_jsonl
from learnat_cli.prompts import format_answer, format_step, student_messages
from learnat_cli.records import PreferencePair, SftRow, TreeRecord


@dataclass
class PairsConfig:
    min_margin: float = 0.05
    max_per_node: int = 3
    include_failed: bool = False


def _reward(node) -> float:
    if node.status != "progressive":
        return 0.0
    return 1.0 if node.terminal else float(node.reward)


def pairs_from_tree(rec: TreeRecord, cfg: PairsConfig) -> Iterator[PreferencePair]:
    by_id = {n.node_id: n for n in rec.nodes}
    kids: dict[int, list] = {}
    for n in rec.nodes:
        if n.parent is not None:
            kids.setdefault(n.parent, []).append(n)
    prompt = student_messages(rec.question, rec.schema_text or "", rec.evidence)
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
        prefix = "".join(format_step(i, n.step.question, n.step.sql) for i, n in enumerate(prefix_nodes, 1))
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


def sft_from_tree(rec: TreeRecord, cfg: PairsConfig) -> Iterator[SftRow]:
    if not rec.steps or not (rec.reached_gold or cfg.include_failed):
        return
    final = rec.gold or rec.steps[-1].sql
    steps = [(s.question, s.sql) for s in rec.steps]
    msgs = student_messages(rec.question, rec.schema_text or "", rec.evidence)
    msgs.append({"role": "assistant", "content": format_answer(steps, final)})
    yield SftRow(id=rec.id, messages=msgs, reached_gold=rec.reached_gold)


def build(path: str, cfg: PairsConfig, sft: bool = False) -> Iterator[Any]:
    name = display_name(path)
    for line, obj in read_jsonl(path):
        rec = parse_record(TreeRecord, obj, name, line)
        if not sft and not rec.nodes:
            from learnat_cli.errors import LearnatError

            raise LearnatError("record has no tree nodes (run decompose without --slim, or use its --trees file)",
                               file=name, line=line, field="nodes")
        yield from (sft_from_tree(rec, cfg) if sft else pairs_from_tree(rec, cfg))
