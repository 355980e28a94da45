"""Rich rendering of a decomposition search tree (``learnat decompose --show-tree``): one line per node with
its status, visits n, mean value v, reward r and marks, then its sub-question and SQL; a legend explains the
marks."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

COLOURS = {"progressive": "green", "redundant": "yellow", "invalid": "red", "root": "bold"}
LEGEND = ("legend: [progressive] part of the gold AST, new coverage · [redundant] nothing new · "
          "[invalid] not part of the gold AST · n visits · v mean value · r reward · ★ terminal (the gold) · "
          "• on the best path")


def render_tree(rec) -> Group:
    kids: dict = {}
    for n in rec.nodes:
        if n.parent is not None:
            kids.setdefault(n.parent, []).append(n)
    best = {s.sql for s in rec.steps}
    status = ("reached gold", "green") if rec.reached_gold else ("gold not reached", "red")
    err = getattr(rec, "error", None)
    head = Text.assemble((f"{rec.id}", "bold"), f"  {rec.question}  ",
                         (f"failed: {err}", "red") if err else status)
    tree = Tree(head)

    def add(branch: Tree, node_id: int) -> None:
        for ch in kids.get(node_id, []):
            on_path = ch.status == "progressive" and ch.step is not None and ch.step.sql in best
            mark = " ★" if ch.terminal else (" •" if on_path else "")
            label = Text.assemble((f"[{ch.status}]", COLOURS.get(ch.status, "white")),
                                  f" n={ch.visits} v={ch.value:.2f} r={ch.reward:.2f}{mark}")
            if ch.step is not None:
                label.append(f"\n{ch.step.question or '(no sub-question)'}", style="italic")
                label.append(f"\n{ch.step.sql}", style="cyan")
            add(branch.add(label), ch.node_id)

    root = next((n for n in rec.nodes if n.parent is None), None)
    if root is not None:
        add(tree, root.node_id)
    return Group(tree, Text(LEGEND, style="dim"))
