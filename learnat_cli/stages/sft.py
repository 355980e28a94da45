"""``learnat sft`` as a stage function: SFT rows in -> adapter folder + manifest record out (paper sec. 3.3,
"SFT on successful trajectories comes first, then MDPO").

Input: :class:`~learnat_cli.records.SftRow` rows (a JSONL path in ``cfg.input``, or ``rows`` in memory) and an
:class:`~learnat_cli.training.config.SftConfig`. Output: the adapter (or full model) in ``cfg.output_dir``
with ``training_config.json`` (the resolved config, readable by ``--config``), ``metrics.json``, checkpoints,
and the manifest record returned (the report: steps, first/final/eval loss, portable base model, ...).
Training runs in this process or under ``accelerate launch`` (``gpus``/``nodes``/``deepspeed``); see
:mod:`learnat_cli.training.runner` and :mod:`learnat_cli.training.launch`.
"""

from __future__ import annotations

from typing import Any

from learnat_cli.training.config import SftConfig
from learnat_cli.training.runner import EventFn


def sft(cfg: SftConfig | None = None, *, rows: list[dict[str, Any]] | None = None,
        on_event: EventFn | None = None, **options: Any) -> dict[str, Any]:
    """Fine-tune the student; ``options`` are :class:`SftConfig` fields (used when ``cfg`` is None). Returns
    the manifest record. ``on_event(kind, info)`` receives progress (see
    :data:`learnat_cli.training.runner.EventFn`)."""
    from learnat_cli.training.launch import train

    return train("sft", cfg or SftConfig.from_dict(options), rows=rows, on_event=on_event)
