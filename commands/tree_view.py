"""Rich rendering of a decomposition search tree (``learnat decompose --show-tree``)."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

COLOURS = {"progressive": "green", "redundant": "yellow", "invalid": "red", "root": "bold"}


def render_tree(rec) -> Tree:
    nodes = {n.node_id: n for n in rec.nodes}
    kids: dict = {}
    for n in rec.nodes:
        if n.parent is not None:
            kids.setdefault(n.parent, []).append(n)
    best = {s.sql for s in rec.steps}
    head = Text.assemble((f"{rec.id}", "bold"), f"  {rec.question}  ",
                         ("reached gold" if rec.reached_gold else "gold not reached",
                          "green" if rec.reached_gold else "red"))
    tree = Tree(head)

    def add(branch: Tree, node_id: int):
        for ch in kids.get(node_id, []):
            colour = COLOURS.get(ch.status, "white")
            mark = " ★" if ch.terminal else (" •" if ch.step and ch.step.sql in best else "")
            label = Text.assemble((f"[{ch.status}]", colour), f" n={ch.visits} v={ch.value:.2f} r={ch.reward:.2f}{mark}  ",
                                  (ch.step.sql if ch.step else "", "cyan"))
            add(branch.add(label), ch.node_id)

    root = next((n for n in nodes.values() if n.parent is None), None)
    if root is not None:
        add(tree, root.node_id)
    return tree
