"""learnat: LearNAT (arXiv 2504.02327) as a toolkit.

The library core. Nothing in this package imports typer or rich; the CLI lives in ``commands/``.
"""

__version__ = "0.1.0"
