"""The trained student that ships with learnat (LearNAT issue 15, part 4): a LoRA adapter over the embedded
Qwen2.5-Coder-0.5B, packaged in ``learnat_cli/student/`` with a checksum file, its settings and a model card.

Folder layout (written by :func:`ship`, read by :func:`shipped_adapter`): ``adapter_config.json`` and
``adapter_model.safetensors`` (peft), ``learnat.json`` (how the student is asked: ``schema_format``, the base
model, where the weights came from), ``MODEL_CARD.md`` (data, steps, settings, EX table, licences) and
``SHA256SUMS`` (every other file). Until a trained adapter wins its evaluation the folder holds no weights and
``ask`` uses the plain base.

Who uses it: ``learnat ask`` with the default model and no ``--adapter`` (``--adapter none`` asks the plain
base, ``--adapter DIR`` another adapter; :func:`resolve_adapter`); ``ask --schema-format auto`` asks an
adapter with the schema format it was trained on (:func:`adapter_schema_format`), and ``ask`` without
``--decompose`` in the decomposition mode it was shipped for (:func:`default_decompose`: else ``auto``; the
embedded 0.5B without an adapter answers directly, its measured best).
Benchmarks and ``make loop`` name their adapters explicitly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError

STUDENT_DIR = Path(__file__).resolve().parent / "student"
WEIGHTS = ("adapter_config.json", "adapter_model.safetensors")
META = "learnat.json"
CARD = "MODEL_CARD.md"
SUMS = "SHA256SUMS"
MAX_BYTES = 20 * 1024 * 1024  # the largest adapter learnat ships
NO_ADAPTER = ("none", "base")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: str | Path) -> None:
    """Check every file listed in ``SHA256SUMS``; a missing or changed file is a one-line error naming it."""
    folder = Path(folder)
    sums = folder / SUMS
    if not sums.is_file():
        raise LearnatError("the shipped student has no SHA256SUMS: reinstall learnat", file=str(folder))
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        path = folder / name.strip()
        if not path.is_file():
            raise LearnatError(f"SHA256SUMS line {n}: {name.strip()} is missing: reinstall learnat",
                               file=str(folder))
        if _sha256(path) != digest.strip():
            raise LearnatError(f"{name.strip()} does not match its checksum: reinstall learnat",
                               file=str(path))


def shipped_adapter(folder: str | Path | None = None) -> Path | None:
    """The shipped adapter folder, checked against its checksums; None when learnat ships no weights."""
    folder = Path(folder) if folder is not None else STUDENT_DIR
    if not all((folder / f).is_file() for f in WEIGHTS):
        return None
    verify(folder)
    return folder


def resolve_adapter(model: str | None, adapter: str | None, backend: str = "auto",
                    folder: str | Path | None = None) -> str | None:
    """The adapter ``ask`` loads: ``--adapter none`` (or ``base``) -> none; an explicit one as given; with
    the default embedded model (and a local engine) and no ``--adapter``, the shipped student if any."""
    from learnat_cli.models import ALIASES

    if adapter is not None and adapter.strip().lower() in NO_ADAPTER:
        return None
    if adapter:
        return adapter
    if backend == "openai" or ALIASES.get(model, model) != ALIASES[None]:
        return None
    found = shipped_adapter(folder)
    return str(found) if found else None


def adapter_setting(adapter: str | Path | None, key: str) -> str | None:
    """A string setting an adapter records in its ``learnat.json``, None when it does not say."""
    if not adapter:
        return None
    meta = Path(adapter) / META
    if not meta.is_file():
        return None
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get(key)
    except (json.JSONDecodeError, AttributeError):
        raise LearnatError("not a JSON object", file=str(meta)) from None
    return value if isinstance(value, str) else None


def adapter_schema_format(adapter: str | Path | None) -> str | None:
    """The schema format an adapter was trained with (its ``learnat.json``), None when it does not say."""
    return adapter_setting(adapter, "schema_format")


def default_decompose(model: str | None, adapter: str | Path | None) -> str:
    """``ask``'s decomposition mode when ``--decompose`` is not given. An adapter: the mode it was shipped
    for, else ``auto`` (learnat's SFT rows follow the adaptive rule). The embedded 0.5B without an adapter:
    ``never``, because the untrained 0.5B loses accuracy whenever it decomposes, measured twice on 300
    Spider dev questions (docs/BENCHMARKS.md, "The loop on Spider"): the adaptive path 44.3% vs direct SQL
    47.7% (McNemar p 0.05) and, on another machine, 43.3% vs 47.7% (4 fixed, 17 broken, p 0.007; on the 99
    questions it decomposes, 22 right vs 35). Any other model: ``auto``, the paper's inference path."""
    from learnat_cli.models import ALIASES

    if adapter is not None:
        return adapter_decompose(adapter) or "auto"
    return "never" if ALIASES.get(model, model) == ALIASES[None] else "auto"


def adapter_decompose(adapter: str | Path | None) -> str | None:
    """The ``ask --decompose`` mode an adapter was shipped for (the mode of the configuration that won its
    evaluation, ``learnat.json``), None when it does not say."""
    return adapter_setting(adapter, "decompose")


def ship(adapter: str | Path, into: str | Path, meta: dict[str, Any], card: str) -> dict[str, Any]:
    """Copy a trained LoRA adapter into ``into`` with ``learnat.json`` (``meta``), ``MODEL_CARD.md``
    (``card``) and ``SHA256SUMS``; refuses a folder that is not a LoRA adapter or weights over 20 MB.
    Returns the files and their sizes."""
    src, dst = Path(adapter), Path(into)
    missing = [f for f in WEIGHTS if not (src / f).is_file()]
    if missing:
        raise LearnatError(f"not a LoRA adapter folder (no {missing[0]})", file=str(src))
    size = (src / WEIGHTS[1]).stat().st_size
    if size > MAX_BYTES:
        raise LearnatError(f"adapter weights are {size / 2**20:.1f} MB; learnat ships at most 20 MB",
                           file=str(src / WEIGHTS[1]))
    if not isinstance(meta.get("schema_format"), str):
        raise LearnatError("meta needs the schema_format the adapter was trained with", field="schema_format")
    dst.mkdir(parents=True, exist_ok=True)
    for f in WEIGHTS:
        shutil.copyfile(src / f, dst / f)
    (dst / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (dst / CARD).write_text(card, encoding="utf-8")
    names = [*WEIGHTS, META, CARD]
    (dst / SUMS).write_text("".join(f"{_sha256(dst / n)}  {n}\n" for n in names), encoding="utf-8")
    return {"folder": str(dst), "files": {n: (dst / n).stat().st_size for n in [*names, SUMS]}}
