"""Decomposition synthesis (LearNAT sec. 3.2): teacher protocol and cache, LLM teachers, the AST teacher,
MCTS."""
