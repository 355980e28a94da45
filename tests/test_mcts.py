"""MCTS on hand-made trees: UCT follows its formula, classification on worked examples, search behaviour."""

from __future__ import annotations

import asyncio
import math

from learnat_cli.sql import GoldAst
from learnat_cli.synthesis.mcts import MctsConfig, Node, Search, classify, select_child, uct
from learnat_cli.synthesis.teachers import Proposal


def test_uct_formula_and_selection():
    parent = Node(id=0, visits=10)
    a = Node(id=1, parent=parent, status="progressive", visits=5, value_sum=3.0)  # 0.6 + c*sqrt(ln11/5)
    b = Node(id=2, parent=parent, status="progressive", visits=1, value_sum=0.2)  # 0.2 + c*sqrt(ln11/1)
    c = Node(id=3, parent=parent, status="invalid", visits=0)
    parent.children = [a, b, c]
    ua, ub = uct(a, 10, 1.41), uct(b, 10, 1.41)
    assert math.isclose(ua, 0.6 + 1.41 * math.sqrt(math.log(11) / 5))
    assert math.isclose(ub, 0.2 + 1.41 * math.sqrt(math.log(11) / 1))
    assert select_child(parent, 1.41, prune=True) is b  # ub > ua; the invalid child is pruned
    assert select_child(parent, 0.1, prune=True) is a  # little exploration: exploitation wins
    assert select_child(parent, 1.41, prune=False) is c  # without pruning, an unvisited child goes first
    assert uct(c, 10, 1.41) == math.inf


GOLD = "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer) ORDER BY name"


def test_classification_worked_examples():
    g = GoldAst(GOLD)
    inner = g.covered("SELECT AVG(age) FROM singer")
    assert classify(g, "SELECT AVG(age) FROM singer", frozenset())[0] == "progressive"
    assert classify(g, "SELECT AVG(age) FROM singer", inner)[0] == "redundant"
    assert classify(g, "SELECT MAX(age) FROM singer", frozenset())[0] == "invalid"
    assert classify(g, "SELECT AVG(age) FROM singer WHERE", frozenset())[0] == "invalid"
    mid = "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)"
    assert classify(g, mid, inner)[0] == "progressive"


class Scripted:
    """A scripted teacher: proposals keyed by the number of steps so far."""

    def __init__(self, script):
        self.script = script
        self.calls = 0

    async def __call__(self, steps, k):
        self.calls += 1
        return [Proposal(q, s) for q, s in self.script.get(len(steps), [])][:k]


SCRIPT = {
    0: [("avg age?", "SELECT AVG(age) FROM singer"), ("max age?", "SELECT MAX(age) FROM singer")],
    1: [("older than avg?", "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)"),
        ("again avg?", "SELECT AVG(age) FROM singer")],
    2: [("sorted", GOLD), ("wrong order", "SELECT name FROM singer ORDER BY age")],
}


def test_search_reaches_gold_and_prunes():
    teacher = Scripted(SCRIPT)
    s = asyncio.run(Search(GoldAst(GOLD), teacher, MctsConfig(simulations=20)).run())
    path, reached = s.best_path()
    assert reached and [n.sql for n in path][-1] == GOLD and len(path) == 3
    statuses = sorted(n.status for n in s.nodes[1:])
    assert statuses == ["invalid", "invalid", "progressive", "progressive", "progressive", "redundant"]
    assert teacher.calls == 3  # invalid/redundant children were never expanded
    assert all(not n.expanded for n in s.nodes if n.status in ("invalid", "redundant"))
    rewards = [n.reward for n in path]
    assert rewards == sorted(rewards) and rewards[-1] == 1.0
    # back-propagation: the root's visits equal the simulations run; values are means of rewards
    assert s.root.visits == sum(ch.visits for ch in s.root.children)


def test_no_prune_expands_rejected_nodes_and_costs_more_calls():
    pruned, unpruned = Scripted(SCRIPT), Scripted(SCRIPT)
    asyncio.run(Search(GoldAst(GOLD), pruned, MctsConfig(simulations=20, early_stop=False)).run())
    cfg = MctsConfig(simulations=20, early_stop=False, prune=False)
    asyncio.run(Search(GoldAst(GOLD), unpruned, cfg).run())
    assert unpruned.calls > pruned.calls


def test_max_depth_bounds_the_tree():
    teacher = Scripted(SCRIPT)
    s = asyncio.run(Search(GoldAst(GOLD), teacher, MctsConfig(simulations=20, max_depth=1)).run())
    assert max(n.depth for n in s.nodes) == 1
    path, reached = s.best_path()
    assert not reached and path[0].sql == "SELECT AVG(age) FROM singer"


def test_the_gold_is_terminal_even_when_earlier_steps_cover_everything():
    """Issue 10.3 (BIRD dev 518, 1015, 1144): two steps already cover every gold node, so the gold itself used
    to read as redundant and the search never ended."""
    gold_sql = "SELECT name FROM t WHERE a = 1 ORDER BY name"
    g = GoldAst(gold_sql)
    s1, s2 = "SELECT name FROM t WHERE a = 1", "SELECT name FROM t ORDER BY name"
    assert g.covered(s1) | g.covered(s2) == frozenset(range(g.n_nodes))
    assert classify(g, gold_sql, g.covered(s1) | g.covered(s2))[0] == "redundant"
    script = {0: [("filter", s1)], 1: [("order", s2)],
              2: [("all", "SELECT name FROM t WHERE a = 1 ORDER BY name;")]}
    s = asyncio.run(Search(g, Scripted(script), MctsConfig(simulations=20)).run())
    path, reached = s.best_path()
    assert reached and len(path) == 3 and path[-1].terminal and path[-1].reward == 1.0
    assert path[-1].status == "progressive"


def test_result_equal_step_is_terminal_only_when_part_of_the_gold():
    g = GoldAst("SELECT name FROM t WHERE a = 1 ORDER BY name")
    script = {0: [("other", "SELECT name FROM t WHERE b = 7"), ("filter", "SELECT name FROM t WHERE a = 1")]}
    s = asyncio.run(Search(g, Scripted(script), MctsConfig(simulations=5), is_gold=lambda sql: True).run())
    by_sql = {n.sql: n for n in s.nodes[1:]}
    assert by_sql["SELECT name FROM t WHERE a = 1"].terminal  # a part of the gold with the gold's result
    assert not by_sql["SELECT name FROM t WHERE b = 7"].terminal  # not part of the gold: stays invalid
    assert by_sql["SELECT name FROM t WHERE b = 7"].status == "invalid"


def test_rewards_never_fall_along_any_search_path():
    teacher = Scripted(SCRIPT)
    s = asyncio.run(Search(GoldAst(GOLD), teacher, MctsConfig(simulations=30, early_stop=False)).run())
    for n in s.nodes[1:]:
        if n.status == "progressive" and n.parent.parent is not None:
            assert n.reward >= n.parent.reward
