"""SQL core: parsing, normalisation, AST containment/coverage and AST similarity (LearNAT sec. 3.2,
"AST-guided pruning" and the AST reward).

Everything works on a *label tree* derived from sqlglot's AST after normalisation:

- **Normalisation** (:func:`normalize`): parse (sqlite dialect by default), read SQLite's double-quoted
  strings (``WHERE country = "USA"``) as string literals, lower-case identifiers and drop their quotes,
  resolve table aliases (``T1.name`` -> ``singer.name``), qualify unambiguous unqualified columns with the
  only table in scope, replace references to projection aliases in GROUP BY/HAVING/ORDER BY by the aliased
  expression, drop projection aliases and parentheses, and strip a trailing ``;``.
- **Labels**: a column is ``col:<table>.<name>`` (``col:<name>`` when its table is unknown), a table
  ``table:<name>``, a literal ``str:<text>`` / ``num:<value>`` (with ``@<slot>`` when it is a function's
  argument other than the first: ``num:0@false`` in ``IIF(c, 1, 0)``), ``*``; every other node is its sqlglot
  class name (``Select``, ``Where``, ``Count``, ``Ordered:desc``...). Identifiers, aliases and parentheses are
  folded away. A *predicate* (``=``, ``<>``, ``<``, ``>``, ``LIKE``, ``IN``, ``BETWEEN``, ``IS``, ``EXISTS``,
  and ``NOT`` of one) is one node whose label carries its canonical text, operator, columns and literals
  together (``GT:singer.age > 30``); its only children are the sub-queries inside it (``GT:singer.age > ?``
  above the sub-query's tree). AND chains are flattened into one n-ary ``And`` node, and every WHERE, HAVING
  and JOIN ... ON condition hangs under an ``And`` node (with one child for a single condition), in golds and
  steps alike. An OR chain is flattened too and, being one condition, is one node matched as a whole; so is a
  scalar function over columns and literals (``IIF(c, 1, 0)``, ``SUBSTR(t, 3, 2)``, ``CASE ... END``).
- **Containment** (:meth:`GoldAst.contains`), the paper's subtree test ``N1 ⊆ N2 and E1 ⊆ E2``: the step's
  node label set and edge set (parent label, child label) must both be included in the gold's. So a step may
  keep some of the gold's conjuncts (``WHERE age > 30`` is part of ``WHERE age > 30 AND country = 'France'``),
  but each of its predicates must be one of the gold's as a whole (``a = 2 AND b = 1`` is not part of ``a = 1
  AND b = 2``). One documented relaxation: a step may *project* plain columns or ``*`` the gold does not
  project (a decomposition step often selects ids or names it needs next: ``SELECT id FROM cards WHERE color =
  'R'`` is a step towards ``SELECT COUNT(*) FROM cards WHERE color = 'R'``); such a column must belong to a
  table the gold uses and, when the schema is known (``GoldAst(..., columns=)``, which ``decompose`` always
  passes when it has a database or tables.json), exist in it. Anything else new — a table, a condition, a
  literal, a function — makes the step *invalid*. Labels are checked per scope as well: each SELECT of the
  step must lie within one SELECT of the gold (no mixing the two sides of an EXCEPT).
- **Coverage** (:meth:`GoldAst.covered`): the gold nodes (by position) whose incoming edge (parent label,
  label) appears in the step; the gold root is covered when the step's root has its label. A step is
  *redundant* when its coverage adds nothing to the union of earlier steps'.
- **Similarity** (:func:`similarity`): the pq-gram similarity of Augsten, Böhlen & Gamper (VLDB 2005) with
  p=2, q=3: ``2·|P(a) ∩ P(b)| / (|P(a)| + |P(b)|)`` over the bags of pq-grams of the two label trees. pq-gram
  distance is a proven approximation of tree edit distance (it bounds a fanout-weighted edit distance)
  computed in O(n log n) instead of TED's O(n³); it is symmetric, 1.0 for identical trees and near 0 for
  unrelated ones. Bags are cached per SQL string, so pairwise scoring is a bag intersection.
- **Merged AST and reward** (:meth:`GoldAst.reward`): the steps so far are merged by mapping each onto the
  gold (the positions it covers) and taking the union; the merged AST is the gold restricted to those
  positions. ``R = alpha·sim_node + (1-alpha)·sim_struct`` (the paper's R(s_i), α = 0.7 from the authors'
  code, PAPER.md) with ``sim_node = |merged| / |gold|`` (the authors' node-count ratio) and ``sim_struct`` =
  the share of the gold's pq-grams whose nodes all lie in the merged AST (1.0 for the whole gold). Both terms
  are monotone in the covered set, so adding a progressive step never lowers the reward.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import exp

from learnat_cli.errors import LearnatError

ALPHA = 0.7  # LearNAT authors' code (PAPER.md)
PQ_P, PQ_Q = 2, 3


class SqlParseError(LearnatError):
    """SQL that sqlglot cannot parse (or that is empty / not one statement)."""


# ----------------------------------------------------------------------------------------------------------
# Parsing and normalisation


def check_dialect(dialect: str) -> str:
    """``dialect`` if sqlglot knows it, else a one-line :class:`LearnatError` listing a few it does."""
    try:
        sqlglot.Dialect.get_or_raise(dialect)
    except (ValueError, KeyError):
        raise LearnatError(f"unknown SQL dialect {dialect!r} (sqlglot knows e.g. sqlite, mysql, postgres, "
                           "duckdb, bigquery, snowflake)", field="dialect") from None
    return dialect


def _clean(sql: str) -> str:
    s = (sql or "").strip()
    while s.endswith(";"):
        s = s[:-1].rstrip()
    return s


@lru_cache(maxsize=65536)
def _parse_cached(sql: str, dialect: str) -> exp.Expression:
    s = _clean(sql)
    if not s:
        raise SqlParseError("empty SQL")
    try:
        trees = sqlglot.parse(s, read=dialect)
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SqlParseError(f"SQL does not parse: {msg[:200]}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise SqlParseError(f"expected one SQL statement, got {len(trees)}")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        raise SqlParseError(f"SQL does not parse: unsupported statement {tree.sql()[:60]!r}")
    return tree


def parse(sql: str, dialect: str = "sqlite") -> exp.Expression:
    """Parse one SQL statement (raises :class:`SqlParseError`). The returned tree is shared: copy before
    mutating."""
    return _parse_cached(sql, dialect)


def try_parse(sql: str, dialect: str = "sqlite") -> exp.Expression | None:
    try:
        return parse(sql, dialect)
    except SqlParseError:
        return None


def _scope_tables(select: exp.Expression) -> list[exp.Table]:
    """The tables directly in this SELECT's FROM/JOINs, in order (not derived tables)."""
    out = []
    for src in [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or []):
        if src is None:
            continue
        t = src.this if isinstance(src, (exp.From, exp.Join)) else src
        if isinstance(t, exp.Table):
            out.append(t)
    return out


def _tables_in_scope(select: exp.Expression) -> dict[str, str]:
    """alias-or-name -> table name for the tables directly in this SELECT's FROM/JOINs (``name#k`` for the
    k-th occurrence of a table joined more than once)."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for t in _scope_tables(select):
        name = t.name.lower()
        seen[name] = seen.get(name, 0) + 1
        # a table joined again (a self-join) keeps its occurrences apart: colour, colour#2, ...
        ref = name if seen[name] == 1 else f"{name}#{seen[name]}"
        alias = (t.alias or name).lower()
        out[alias] = ref
        out.setdefault(name, name)
    return out


def normalize(sql_or_expr, dialect: str = "sqlite") -> exp.Expression:
    """A normalised copy of the query (see module docstring)."""
    sql = sql_or_expr if isinstance(sql_or_expr, str) else sql_or_expr.sql(dialect=dialect)
    return _normalize_cached(sql, dialect)


_COMPARE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)


def _double_quoted_strings(tree: exp.Expression) -> None:
    """SQLite reads ``"USA"`` as a string when no column has that name (Spider's gold SQL relies on it). A
    double-quoted, unqualified name compared against (right of ``=``/``LIKE``/..., or inside ``IN (...)``) is
    taken as the string literal it almost always is."""
    for col in list(tree.find_all(exp.Column)):
        ident = col.this
        if not isinstance(ident, exp.Identifier) or not ident.quoted or col.table:
            continue
        parent = col.parent
        if (isinstance(parent, _COMPARE) and parent.expression is col) or \
                (isinstance(parent, exp.In) and col in parent.expressions):
            col.replace(exp.Literal.string(ident.this))


def _inline_projection_aliases(select: exp.Select) -> None:
    """``SELECT COUNT(*) AS n ... ORDER BY n`` -> ``... ORDER BY COUNT(*)``: a bare name in GROUP BY, HAVING
    or ORDER BY that is one of this SELECT's projection aliases stands for the aliased expression."""
    aliases = {a.alias.lower(): a.this for a in select.expressions if isinstance(a, exp.Alias) and a.alias}
    if not aliases:
        return
    for key in ("group", "having", "order"):
        clause = select.args.get(key)
        if clause is None:
            continue
        for col in list(clause.find_all(exp.Column)):
            if col.table or isinstance(col.this, exp.Star) or col.find_ancestor(exp.Select) is not select:
                continue
            target = aliases.get(col.name.lower())
            same = isinstance(target, exp.Column) and target.name.lower() == col.name.lower()
            if target is not None and not same:
                col.replace(target.copy())


@lru_cache(maxsize=65536)
def _normalize_cached(sql: str, dialect: str) -> exp.Expression:
    tree = parse(sql, dialect).copy()
    if dialect == "sqlite":
        _double_quoted_strings(tree)
    for ident in tree.find_all(exp.Identifier):
        ident.set("this", ident.this.lower())
        ident.set("quoted", False)
    for select in list(tree.find_all(exp.Select)):
        _inline_projection_aliases(select)
        scope = _tables_in_scope(select)
        real = {v.split("#")[0] for v in scope.values()}
        for col in select.find_all(exp.Column):
            # only columns of this SELECT, not of nested ones
            if col.find_ancestor(exp.Select) is not select:
                continue
            tname = col.table.lower() if col.table else ""
            if tname and tname in scope:
                col.set("table", exp.to_identifier(scope[tname]))
            elif not tname and len(real) == 1:
                col.set("table", exp.to_identifier(next(iter(real))))
    for t in tree.find_all(exp.Table):
        if t.args.get("alias") is not None:
            t.set("alias", None)
    for a in list(tree.find_all(exp.Alias)):
        if isinstance(a.parent, exp.Select) and a.arg_key == "expressions":
            a.replace(a.this)
    for p in list(tree.find_all(exp.Paren)):
        if not isinstance(p.this, (exp.Select, exp.Union)):
            p.replace(p.this)
    return tree


# ----------------------------------------------------------------------------------------------------------
# Label trees


@dataclass
class LNode:
    label: str
    children: list[LNode] = field(default_factory=list)
    in_projection: bool = False  # a plain column/star item of its SELECT's projection list


def _label(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Column):
        if isinstance(node.this, exp.Star):
            return "*"
        return f"col:{node.table}.{node.name}" if node.table else f"col:{node.name}"
    if isinstance(node, exp.Table):
        return f"table:{node.name}"
    if isinstance(node, exp.Literal):
        return f"str:{node.this}" if node.is_string else f"num:{_num(node.this)}"
    if isinstance(node, exp.Star):
        return "*"
    if isinstance(node, exp.Ordered):
        return "Ordered:desc" if node.args.get("desc") else "Ordered:asc"
    if isinstance(node, exp.Join):
        side = (node.side or "").lower()
        return f"Join:{side}" if side and side != "inner" else "Join"
    if isinstance(node, exp.Select) and node.args.get("distinct"):
        return "Select:distinct"
    if isinstance(node, (exp.Identifier, exp.Distinct, exp.TableAlias)):
        return None
    return type(node).__name__


def _num(v: str) -> str:
    try:
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    except ValueError:
        return v


_LEAFY = (exp.Column, exp.Table, exp.Literal, exp.Star)
# A predicate is one node: operator, column(s) and literal(s) together (its label carries its canonical text),
# so that a step cannot recombine the gold's columns and literals into a predicate the gold does not have.
_PRED = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Glob, exp.In,
         exp.Between, exp.Is, exp.Exists, exp.NullSafeEQ, exp.NullSafeNEQ, exp.RegexpLike)
_QUERY = (exp.Select, exp.Subquery, exp.SetOperation)
_HOLE = "\x01"


def _children(node: exp.Expression):
    for key, val in node.args.items():
        if key == "alias":
            continue
        vals = val if isinstance(val, list) else [val]
        for v in vals:
            if isinstance(v, exp.Expression):
                yield key, v


def _is_pred(node: exp.Expression) -> bool:
    if isinstance(node, exp.Not):
        return isinstance(node.this, _PRED) or _is_pred(node.this)
    return isinstance(node, _PRED)


def _outer_queries(node: exp.Expression) -> list[exp.Expression]:
    """The sub-queries directly inside ``node`` (not those nested in another sub-query), in argument order."""
    out: list[exp.Expression] = []
    for _, ch in _children(node):
        if isinstance(ch, _QUERY):
            out.append(ch)
        else:
            out.extend(_outer_queries(ch))
    return out


def _pred_text(node: exp.Expression) -> str:
    """Canonical text of a predicate: its SQL with numbers normalised and each sub-query replaced by a
    hole."""
    cp = node.copy()
    for q in _outer_queries(cp):
        q.replace(exp.Var(this=_HOLE))
    for lit in list(cp.find_all(exp.Literal)):
        if not lit.is_string:
            lit.replace(exp.Literal(this=_num(lit.this), is_string=False))
    return cp.sql().replace(_HOLE, "?")


def _flatten(node: exp.Expression, cls: type) -> list[exp.Expression]:
    """The operands of an AND (or OR) chain, in order: ``a AND (b AND c)`` -> ``[a, b, c]``."""
    if isinstance(node, cls):
        return _flatten(node.this, cls) + _flatten(node.expression, cls)
    if isinstance(node, exp.Paren) and isinstance(node.this, cls):
        return _flatten(node.this, cls)
    return [node]


def _conjunction(cond: exp.Expression) -> LNode:
    """A WHERE / HAVING / ON condition as one n-ary ``And`` node over its conjuncts (a single condition
    too), so that a step keeping some of the gold's conjuncts is a structural part of it."""
    kids: list[LNode] = []
    for c in _flatten(cond, exp.And):
        kids.extend(_build(c))
    return LNode("And", kids)


def _build(node: exp.Expression, projection: bool = False, key: str = "this") -> list[LNode]:
    """Label tree(s) for ``node``: a node without a label (identifier, alias...) is replaced by its
    children. A literal outside a predicate carries its argument slot (``num:0@false`` in ``IIF(c, 1, 0)``),
    so that a step cannot move the gold's literals between the arguments of a function either."""
    if _is_pred(node):
        kids = [k for q in _outer_queries(node) for k in _build(q)]
        return [LNode(f"{type(node).__name__}:{_pred_text(node)}", kids)]
    if isinstance(node, exp.Or):  # a disjunction is one condition: flattened, and matched as a whole
        parts = _flatten(node, exp.Or)
        kids = [k for q in _outer_queries(node) for k in _build(q)]
        return [LNode("Or:" + " OR ".join(_pred_text(d) for d in parts), kids)]
    if isinstance(node, exp.And):
        kids = [k for c in _flatten(node, exp.And) for k in _build(c)]
        return [LNode("And", kids)]
    if isinstance(node, exp.Func) and not node.find(exp.AggFunc, *_QUERY):
        # a scalar function over columns and literals (IIF, SUBSTR, STRFTIME, CASE, CAST...) is one node too
        return [LNode(f"{type(node).__name__}:{_pred_text(node)}", [])]
    lab = _label(node)
    if isinstance(node, exp.Literal) and key != "this":
        lab = f"{lab}@{key}"
    kids = []
    if not isinstance(node, _LEAFY):
        for key, ch in _children(node):
            if (isinstance(node, (exp.Where, exp.Having)) and key == "this") or \
                    (isinstance(node, exp.Join) and key == "on"):
                kids.append(_conjunction(ch))
                continue
            proj = isinstance(node, exp.Select) and key == "expressions"
            kids.extend(_build(ch, proj, key))
    if lab is None:
        return kids
    return [LNode(lab, kids, in_projection=projection and lab.startswith(("col:", "*")))]


@lru_cache(maxsize=65536)
def label_tree(sql: str, dialect: str = "sqlite") -> LNode:
    roots = _build(normalize(sql, dialect))
    return roots[0] if len(roots) == 1 else LNode("Root", roots)


def _walk(root: LNode):
    """Yield (node, parent_label, index) in preorder; index is the preorder position (a stable node key)."""
    stack = [(root, None)]
    i = 0
    while stack:
        n, plab = stack.pop()
        yield n, plab, i
        i += 1
        for ch in reversed(n.children):
            stack.append((ch, n.label))


def tree_size(sql: str, dialect: str = "sqlite") -> int:
    return sum(1 for _ in _walk(label_tree(sql, dialect)))


# ----------------------------------------------------------------------------------------------------------
# Similarity (pq-grams)


@lru_cache(maxsize=65536)
def pq_profile(sql: str, dialect: str = "sqlite") -> tuple[Counter, int]:
    """The bag of pq-grams (as hashes) of the query's label tree and its size."""
    root = label_tree(sql, dialect)
    bag: Counter = Counter()
    star = "\x00"

    def rec(n: LNode, anc: tuple):
        stem = (anc + (n.label,))[-PQ_P:]
        if not n.children:
            bag[hash(stem + (star,) * PQ_Q)] += 1
            return
        for ch in n.children:
            rec(ch, stem)
        labels = [star] * (PQ_Q - 1) + [c.label for c in n.children] + [star] * (PQ_Q - 1)
        for i in range(len(labels) - PQ_Q + 1):
            bag[hash(stem + tuple(labels[i:i + PQ_Q]))] += 1

    rec(root, (star,) * (PQ_P - 1))
    return bag, sum(bag.values())


def _bag_similarity(a: tuple[Counter, int], b: tuple[Counter, int]) -> float:
    ba, na = a
    bb, nb = b
    if na + nb == 0:
        return 1.0
    small, big = (ba, bb) if len(ba) <= len(bb) else (bb, ba)
    inter = 0
    for k, v in small.items():
        w = big.get(k)
        if w:
            inter += v if v < w else w
    return 2.0 * inter / (na + nb)


def similarity(a: str, b: str, dialect: str = "sqlite") -> float:
    """AST similarity in [0, 1] (pq-gram, see module docstring). A query that does not parse scores 0."""
    try:
        pa = pq_profile(a, dialect)
        pb = pq_profile(b, dialect)
    except SqlParseError:
        return 0.0
    return _bag_similarity(pa, pb)


# ----------------------------------------------------------------------------------------------------------
# Containment, coverage, reward


@dataclass(frozen=True)
class _Features:
    nodes: frozenset
    edges: frozenset
    root: str
    free_tables: frozenset  # tables of columns projected under the projection relaxation
    scopes: tuple = ()  # (nodes, edges) of each SELECT on its own (and of what is above them)


def _scopes(root: LNode) -> tuple:
    """(nodes, edges) per scope: each SELECT's own part (down to, not into, nested SELECTs; the edge into a
    nested SELECT belongs to the outer scope) and the part above every SELECT (set operations). Projected
    columns under the relaxation are left out, as in :func:`_features`."""
    scopes: list[tuple[set, set]] = [(set(), set())]
    stack: list[tuple[LNode, str | None, int]] = [(root, None, 0)]
    while stack:
        n, plab, sc = stack.pop()
        own = sc
        if n.label.startswith("Select"):
            scopes.append((set(), set()))
            own = len(scopes) - 1
        if not n.in_projection:
            scopes[own][0].add(n.label)
            if plab is not None:
                scopes[sc][1].add((plab, n.label))
        for ch in n.children:
            stack.append((ch, n.label, own))
    return tuple((frozenset(a), frozenset(b)) for a, b in scopes if a or b)


@lru_cache(maxsize=65536)
def _features(sql: str, dialect: str) -> _Features:
    root = label_tree(sql, dialect)
    nodes, edges, free_tables = set(), set(), set()
    for n, plab, _ in _walk(root):
        if n.in_projection:
            # record separately: checked against the gold's tables, not its nodes
            tbl = n.label[4:].split(".")[0] if n.label.startswith("col:") and "." in n.label else ""
            free_tables.add((n.label, tbl))
            continue
        nodes.add(n.label)
        if plab is not None:
            edges.add((plab, n.label))
    return _Features(frozenset(nodes), frozenset(edges), root.label, frozenset(free_tables), _scopes(root))


def _pq_positions(root: LNode) -> list[tuple[int, ...]]:
    """The pq-grams (p=2, q=3) of a tree as tuples of preorder positions (-1 for the ``*`` filler)."""
    out: list[tuple[int, ...]] = []
    pos = {id(n): i for n, _, i in _walk(root)}

    def rec(n: LNode, anc: tuple):
        stem = (anc + (pos[id(n)],))[-PQ_P:]
        if not n.children:
            out.append(stem + (-1,) * PQ_Q)
            return
        for ch in n.children:
            rec(ch, stem)
        kids = [-1] * (PQ_Q - 1) + [pos[id(c)] for c in n.children] + [-1] * (PQ_Q - 1)
        for i in range(len(kids) - PQ_Q + 1):
            out.append(stem + tuple(kids[i:i + PQ_Q]))

    rec(root, (-1,) * (PQ_P - 1))
    return out


Columns = Mapping[str, Iterable[str]]


class GoldAst:
    """The gold query's AST, against which decomposition steps are checked (invalid / redundant /
    progressive).

    ``columns`` (table -> column names, any case) is the schema when known: a column a step projects beyond
    the gold's own must then exist in one of the gold's tables."""

    def __init__(self, gold: str, dialect: str = "sqlite", columns: Columns | None = None):
        self.gold = gold
        self.dialect = dialect
        self.root = label_tree(gold, dialect)  # raises SqlParseError for a bad gold
        self._walk = list(_walk(self.root))
        self.n_nodes = len(self._walk)
        self.nodes = frozenset(n.label for n, _, _ in self._walk)
        self.edges = frozenset((p, n.label) for n, p, _ in self._walk if p is not None)
        self.tables = frozenset(lab[6:] for lab in self.nodes if lab.startswith("table:"))
        self._proj = frozenset(n.label for n, _, _ in self._walk if n.in_projection)
        self._pqgrams = _pq_positions(self.root)
        self._scopes = _scopes(self.root)
        self.columns: dict[str, frozenset] | None = None
        if columns is not None:
            self.columns = {t.lower(): frozenset(c.lower() for c in cs) for t, cs in columns.items()}

    def _column_exists(self, label: str, tbl: str) -> bool:
        if self.columns is None:  # no schema: the column cannot be checked (documented relaxation)
            return tbl in self.tables if tbl else bool(self.tables)
        name = label[4:].split(".", 1)[1] if tbl else label[4:]
        tbl = tbl.split("#")[0]
        if tbl:
            return tbl in self.tables and name in self.columns.get(tbl, ())
        return any(name in self.columns.get(t, ()) for t in self.tables)

    def contains(self, sql: str) -> bool:
        """Does ``sql`` parse and is its AST a structural part of the gold's (nodes and edges included)?"""
        try:
            f = _features(sql, self.dialect)
        except SqlParseError:
            return False
        if not (f.nodes <= self.nodes and f.edges <= self.edges):
            return False
        # position, not only labels: each SELECT of the step lies within one SELECT of the gold (a step may
        # not combine a condition of one side of an EXCEPT with a condition of the other)
        for nodes, edges in f.scopes:
            if not any(nodes <= gn and edges <= ge for gn, ge in self._scopes):
                return False
        for label, tbl in f.free_tables:
            if label == "*" or label in self.nodes or label in self._proj:
                continue
            if not self._column_exists(label, tbl):
                return False
        return True

    def covered(self, sql: str) -> frozenset:
        """Preorder positions of the gold nodes that ``sql`` covers (empty when not contained)."""
        if not self.contains(sql):
            return frozenset()
        f = _features(sql, self.dialect)
        step_root = label_tree(sql, self.dialect)
        proj_labels = {lab for lab, _ in f.free_tables}
        out = set()
        for n, plab, i in self._walk:
            if plab is None:
                if n.label == step_root.label:
                    out.add(i)
            elif (plab, n.label) in f.edges or (n.in_projection and n.label in proj_labels):
                out.add(i)
        return frozenset(out)

    def similarity(self, sql: str) -> float:
        return similarity(sql, self.gold, self.dialect)

    def merged_similarity(self, covered_union: frozenset) -> float:
        """sim_struct of the merged AST (the gold restricted to ``covered_union``): the share of the gold's
        pq-grams whose nodes all lie in the merged AST. 1.0 when every node is covered; never falls as the
        covered set grows."""
        if not self._pqgrams:
            return 0.0
        hit = sum(1 for g in self._pqgrams if all(i < 0 or i in covered_union for i in g))
        return hit / len(self._pqgrams)

    def reward(self, covered_union: frozenset, alpha: float = ALPHA) -> float:
        """The paper's R(s_i) = alpha·sim_node + (1-alpha)·sim_struct between the merged AST of the steps so
        far and the gold: sim_node = |merged| / |gold| and sim_struct = :meth:`merged_similarity`. Both
        terms only grow with the covered set, so a progressive step (which adds a node) never lowers the
        reward."""
        node_ratio = len(covered_union) / self.n_nodes if self.n_nodes else 0.0
        return alpha * min(1.0, node_ratio) + (1 - alpha) * self.merged_similarity(covered_union)

    def matches(self, sql: str) -> bool:
        """Same normalised AST as the gold."""
        try:
            return normalize(sql, self.dialect) == normalize(self.gold, self.dialect)
        except SqlParseError:
            return False


# ----------------------------------------------------------------------------------------------------------
# Schema-facing helpers


def tables_and_columns(sql: str, dialect: str = "sqlite") -> tuple[set[str], set[tuple[str | None, str]]]:
    """Tables the query reads and its columns as ``(table or None, column)`` after alias resolution. CTE names
    and derived-table aliases are excluded from the tables."""
    tree = normalize(sql, dialect)
    ctes = {c.alias.lower() for c in tree.find_all(exp.CTE) if c.alias}
    tables = {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    aliases |= {s.alias.lower() for s in tree.find_all(exp.Subquery) if s.alias}
    cols: set[tuple[str | None, str]] = set()
    for c in tree.find_all(exp.Column):
        if isinstance(c.this, exp.Star):
            continue
        name = c.name.lower()
        tbl = c.table.lower().split("#")[0] if c.table else None  # colour#2 (a self-join) is colour
        if tbl in ctes or tbl in aliases:
            continue
        if tbl is None and name in aliases:
            continue
        cols.add((tbl, name))
    return tables, cols


def rebind_columns(sql: str, columns_of: dict[str, set[str]], dialect: str = "sqlite") -> str | None:
    """``sql`` with each qualified column that its table lacks moved to the one table of the same SELECT that
    has it (``T2.hometown`` -> ``T1.hometown`` when only ``T1``, ``teacher``, has ``hometown``); None when
    nothing moves or ``sql`` does not parse. ``columns_of``: table -> its column names, lower-cased
    (:meth:`learnat_cli.schema.Schema.names`).

    Small students mostly fail by binding a real column to the wrong alias of a join (docs/BENCHMARKS.md,
    "unknown column" failures); when exactly one table in scope has the column, the binding is not a guess.
    Nothing else changes: unqualified columns, columns of derived tables and CTEs, outer references from
    correlated subqueries and columns that several (or no) tables in scope have are left as written.
    """
    tree = try_parse(sql, dialect)
    if tree is None:
        return None
    tree = tree.copy()
    changed = False
    for select in tree.find_all(exp.Select):
        # (alias as written, table lower-cased), one per FROM/JOIN table
        sources = [(t.alias or t.name, t.name.lower()) for t in _scope_tables(select) if t.name]
        scope = {a.lower(): name for a, name in sources}
        for col in select.find_all(exp.Column):
            if not col.table or isinstance(col.this, exp.Star) or col.find_ancestor(exp.Select) is not select:
                continue
            table = scope.get(col.table.lower())
            name = col.name.lower()
            if table is None or table not in columns_of or name in columns_of[table]:
                continue
            owners = [a for a, t in sources if name in columns_of.get(t, ())]
            if len(owners) == 1:
                col.set("table", exp.to_identifier(owners[0]))
                changed = True
    return tree.sql(dialect=dialect) if changed else None


def unalias(sql: str, dialect: str = "sqlite") -> str | None:
    """``sql`` with table aliases replaced by the table's own name (``SELECT T2.name FROM concert AS T1 JOIN
    singer AS T2 ON ...`` -> ``SELECT singer.name FROM concert JOIN singer ON ...``), so that every column
    token names its table; None when nothing changes or ``sql`` does not parse.

    Spider's gold SQL writes joins with ``T1``/``T2`` aliases; a small student trained on them learns the
    style but not the binding (``T2.hometown`` where ``T1`` has it, docs/BENCHMARKS.md). Training on the
    alias-free form removes that indirection. Only a table read once in the whole query loses its alias: a
    self-join, or the same table in a subquery, keeps its aliases (renaming could change what a correlated
    reference binds to), as do derived tables. A column is rewritten where its qualifier is bound: in the
    SELECT whose FROM defines the alias (for a correlated subquery's outer reference, the enclosing one).
    """
    tree = try_parse(sql, dialect)
    if tree is None:
        return None
    tree = tree.copy()
    reads = Counter(t.name.lower() for t in tree.find_all(exp.Table) if t.name)
    renames: dict[int, dict[str, str]] = {}  # id(select) -> alias (lower) -> table name as written
    bound: dict[int, set[str]] = {}  # id(select) -> every qualifier its FROM/JOINs bind
    for select in tree.find_all(exp.Select):
        tables = [t for t in _scope_tables(select) if t.name]
        bound[id(select)] = {(t.alias or t.name).lower() for t in tables} | {
            s.alias.lower() for s in select.find_all(exp.Subquery) if s.alias and s.find_ancestor(exp.Select)
            is select}
        for t in tables:
            alias = t.alias
            if alias and alias.lower() != t.name.lower() and reads[t.name.lower()] == 1 \
                    and alias.lower() not in reads:  # FROM a AS b JOIN b AS a: renaming changes the binding
                renames.setdefault(id(select), {})[alias.lower()] = t.name
                t.set("alias", None)
    if not renames:
        return None
    for col in tree.find_all(exp.Column):
        if not col.table:
            continue
        q = col.table.lower()
        sel = col.find_ancestor(exp.Select)
        while sel is not None and q not in bound.get(id(sel), ()):  # the SELECT that binds the qualifier
            sel = sel.find_ancestor(exp.Select)
        if sel is not None and q in renames.get(id(sel), {}):
            col.set("table", exp.to_identifier(renames[id(sel)][q]))
    return tree.sql(dialect=dialect)
