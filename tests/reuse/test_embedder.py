"""The Embedder: vectors from the store where it has them, computed (once per distinct text) where it has not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from costinfer.reuse.embeddings import Embedder, text_hash
from costinfer.store import Store

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="the semantic extra is not installed"
)


def test_stored_and_computed_vectors_come_back_in_the_order_given(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        embedder = Embedder(store)
        first = embedder.embed(["a cat sat on the mat", "a dog barked"])
        assert embedder.computed == 2
        texts = ["a bird sang", "a dog barked", "a cat sat on the mat", "a bird sang", "a fish swam"]
        vectors = embedder.embed(texts)
        assert embedder.computed == 4  # the bird and the fish; the repeated bird once
        assert vectors.shape == (5, 384) and vectors.dtype == np.float32
        assert np.array_equal(vectors[1], first[1]) and np.array_equal(vectors[2], first[0])  # the stored ones
        assert np.array_equal(vectors[0], vectors[3])
        assert np.allclose(vectors, embedder.encode(texts), atol=2e-3)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        again = embedder.embed(["a fish swam", "a cat sat on the mat"])
        assert embedder.computed == 4 and np.array_equal(again, vectors[[4, 2]])
        assert embedder.embed([]).shape[0] == 0


def test_stored_vectors_read_back_a_batch_at_a_time_land_in_their_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store streams the vectors in batches (a million in one table peaked 5.6 GB): with batches of two rows, a
    fresh Embedder gets every stored vector back in the order asked, computing none."""
    from costinfer.store import reuse

    texts = [f"a sentence about topic {word}" for word in ("cats", "dogs", "birds", "fish", "trees", "rivers", "hills")]
    with Store.open(tmp_path / "s.duckdb") as store:
        computed = Embedder(store).embed(texts)
        monkeypatch.setattr(reuse, "EMBEDDING_BATCH_ROWS", 2)
        assert [b.num_rows for b in store.embeddings(Embedder(store).model_name, [text_hash(t) for t in texts])] == [
            2, 2, 2, 1
        ]  # fmt: skip
        again = Embedder(store)
        asked = [texts[i] for i in (6, 0, 3, 3, 5, 1, 2, 4)]
        assert np.array_equal(again.embed(asked), computed[[6, 0, 3, 3, 5, 1, 2, 4]])
        assert again.computed == 0


def test_a_read_only_embed_computes_without_storing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        embedder = Embedder(store)
        vectors = embedder.embed(["one text", "another text", "one text"], keep=False)
        assert vectors.shape == (3, 384) and np.array_equal(vectors[0], vectors[2])
        assert embedder.computed == 0
        stored = store.embeddings(embedder.model_name, [text_hash("one text"), text_hash("another text")])
        assert sum(batch.num_rows for batch in stored) == 0
