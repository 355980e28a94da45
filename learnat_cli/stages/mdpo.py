"""``learnat mdpo`` as a stage function: preference pairs in -> adapter folder + manifest record out (paper
sec. 3.3, margin-aware DPO: ``-log sigmoid(beta * delta_logratio - gamma * margin)``, trained after SFT).

Input: :class:`~learnat_cli.records.PreferencePair` rows (a JSONL path in ``cfg.input``, or ``rows`` in
memory, TRL's format plus ``margin``) and an :class:`~learnat_cli.training.config.MdpoConfig`. Output: the
adapter in ``cfg.output_dir`` with the resolved ``training_config.json``, ``metrics.json``, checkpoints, and
the manifest record returned. The loss and the reference model are described in
:mod:`learnat_cli.training.mdpo_trainer`.
"""

from __future__ import annotations

from typing import Any

from learnat_cli.training.config import MdpoConfig
from learnat_cli.training.runner import EventFn


def mdpo(cfg: MdpoConfig | None = None, *, rows: list[dict[str, Any]] | None = None,
         on_event: EventFn | None = None, **options: Any) -> dict[str, Any]:
    """Margin-aware DPO; ``options`` are :class:`MdpoConfig` fields (used when ``cfg`` is None). Returns the
    manifest record."""
    from learnat_cli.training.launch import train

    return train("mdpo", cfg or MdpoConfig.from_dict(options), rows=rows, on_event=on_event)
