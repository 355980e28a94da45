"""Monte Carlo Tree Search over decompositions with AST pruning (LearNAT sec. 3.2).

A state is the question, its schema and the subtasks chosen so far; an action is the next subtask
(sub-question + SQL) proposed by a teacher. Each proposal is classified against the gold AST
(:class:`learnat_cli.sql.GoldAst`):

- *invalid*: the SQL does not parse or is not a structural part of the gold AST;
- *redundant*: it covers no gold AST node that the earlier steps had not covered;
- *progressive*: otherwise. Reward R = :meth:`GoldAst.reward` of the *merged* AST of the steps so far: steps
  are merged by mapping each onto the gold (the gold positions it covers) and taking the union, so the merged
  AST is the gold restricted to the covered positions; R = α·|merged|/|gold| + (1−α)·(share of the gold's
  pq-grams inside the merged AST), α = 0.7. Both terms only grow, so adding a progressive step never lowers R.

A step whose SQL is the gold (same normalised AST, or — for a step that is part of the gold AST — the same
result on the database when one is given) is *terminal* with reward 1, whatever the coverage of the earlier
steps says (it would otherwise read as redundant when they already cover every gold node). With pruning (the
paper's setting) only progressive children are selected and expanded — expansion stops at invalid/redundant
nodes; with ``prune=False`` every child may be selected and expanded (reward 0 for invalid/redundant), which
is the ablation the benchmark compares against.

Defaults and their sources (PAPER.md, the authors' code): UCB = value + c·sqrt(ln(N+1)/n) with c = 1.41,
max depth 5, 50 simulations, α = 0.7. Children per expansion k = 4 is learnat's choice (the paper does not
state it). A search stops early once a terminal node is found (``early_stop``; off explores all simulations).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from learnat_cli.sql import GoldAst

C_UCT = 1.41
MAX_DEPTH = 5
N_SIMULATIONS = 50
CHILDREN = 4


@dataclass
class MctsConfig:
    simulations: int = N_SIMULATIONS
    max_depth: int = MAX_DEPTH
    c: float = C_UCT
    children: int = CHILDREN
    alpha: float = 0.7
    prune: bool = True
    early_stop: bool = True


@dataclass
class Node:
    id: int
    parent: Node | None = None
    depth: int = 0
    question: str = ""
    sql: str = ""
    status: str = "root"  # root | progressive | redundant | invalid
    reward: float = 0.0
    covered: frozenset = frozenset()
    terminal: bool = False
    visits: int = 0
    value_sum: float = 0.0
    expanded: bool = False
    dead: bool = False  # nothing left to explore below (pruned everywhere, or max depth)
    children: list[Node] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def path(self) -> list[Node]:
        out, n = [], self
        while n is not None and n.parent is not None:
            out.append(n)
            n = n.parent
        return out[::-1]


def uct(child: Node, parent_visits: int, c: float) -> float:
    """value + c·sqrt(ln(N+1)/n); an unvisited child scores +inf (tried first)."""
    if child.visits == 0:
        return math.inf
    return child.value + c * math.sqrt(math.log(parent_visits + 1) / child.visits)


def select_child(node: Node, c: float, prune: bool) -> Node | None:
    cands = [ch for ch in node.children if (ch.status == "progressive" or not prune) and not ch.dead]
    if not cands:
        return None
    return max(cands, key=lambda ch: (uct(ch, node.visits, c), ch.reward, -ch.id))


def classify(gold: GoldAst, sql: str, covered_before: frozenset) -> tuple[str, frozenset]:
    """(status, covered-by-this-step) for a proposed step SQL."""
    if not gold.contains(sql):
        return "invalid", frozenset()
    cov = gold.covered(sql)
    if cov <= covered_before:
        return "redundant", cov
    return "progressive", cov


Propose = Callable[[list[tuple[str, str]], int], Awaitable[list]]
IsGold = Callable[[str], bool]


class Search:
    """One example's search. ``propose(steps, k)`` asks the teacher; ``is_gold(sql)`` decides terminal
    steps."""

    def __init__(self, gold: GoldAst, propose: Propose, cfg: MctsConfig, is_gold: IsGold | None = None):
        self.gold = gold
        self.propose = propose
        self.cfg = cfg
        self.is_gold = is_gold or gold.matches
        self.root = Node(id=0)
        self.nodes = [self.root]
        self.expansions = 0

    def _new(self, parent: Node, question: str, sql: str) -> Node:
        status, cov = classify(self.gold, sql, parent.covered)
        node = Node(id=len(self.nodes), parent=parent, depth=parent.depth + 1, question=question, sql=sql,
                    status=status, covered=parent.covered | cov)
        # the gold itself is terminal whatever the coverage of earlier steps says (it may read as redundant)
        if self.gold.matches(sql) or (status != "invalid" and self.is_gold(sql)):
            node.status, node.terminal, node.reward = "progressive", True, 1.0
            node.covered = frozenset(range(self.gold.n_nodes))
        elif status == "progressive":
            node.reward = self.gold.reward(node.covered, self.cfg.alpha)
        self.nodes.append(node)
        return node

    async def expand(self, node: Node) -> None:
        steps = [(n.question, n.sql) for n in node.path()]
        proposals = await self.propose(steps, self.cfg.children)
        self.expansions += 1
        seen = set()
        for p in proposals:
            key = " ".join(p.sql.split()).lower()
            if key in seen:
                continue
            seen.add(key)
            node.children.append(self._new(node, p.question, p.sql))
        node.expanded = True

    def backprop(self, node: Node | None, reward: float) -> None:
        while node is not None:
            node.visits += 1
            node.value_sum += reward
            node = node.parent

    async def run(self) -> Search:
        cfg = self.cfg
        for _ in range(cfg.simulations):
            node = self.root
            # selection
            while node.expanded and not node.terminal:
                nxt = select_child(node, cfg.c, cfg.prune)
                if nxt is None:
                    node.dead = True
                    break
                node = nxt
            if self.root.dead:
                break
            if node.terminal or node.depth >= cfg.max_depth or node.dead:
                if not node.terminal and node.depth >= cfg.max_depth:
                    node.dead = True
                self.backprop(node, node.reward)
                if cfg.early_stop and self.best_terminal():
                    break
                continue
            # expansion (pruned statuses are never expanded when prune=True: select_child skips them)
            await self.expand(node)
            child = select_child(node, cfg.c, cfg.prune)
            if child is None:
                node.dead = True
                self.backprop(node, node.reward)
                continue
            # simulation: the child's AST reward is its value estimate
            self.backprop(child, child.reward)
            if cfg.early_stop and self.best_terminal():
                break
        return self

    def best_terminal(self) -> Node | None:
        terms = [n for n in self.nodes if n.terminal]
        if not terms:
            return None
        return min(terms, key=lambda n: (n.depth, -n.visits, n.id))

    def best_path(self) -> tuple[list[Node], bool]:
        """The trajectory to the shallowest terminal node, else to the highest-reward progressive node."""
        t = self.best_terminal()
        if t is not None:
            return t.path(), True
        prog = [n for n in self.nodes if n.status == "progressive"]
        if not prog:
            return [], False
        best = max(prog, key=lambda n: (n.reward, -n.depth, -n.id))
        return best.path(), False
