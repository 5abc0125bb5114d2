"""The encoders behind the semantic tier: the same sentence-transformers model, run by the fastest runtime installed
that agrees with it.

Measured on this project's 2-core CPUs (``benchmarks/encoders.py``: banking77's 13,083 utterances, against
sentence-transformers on torch in the same invocation): OpenVINO with the fp32 model 2.2-2.4x with the same vectors
(lowest cosine 0.9999 on banking77, STS-B and MRPC; no reuse decision differs on the STS-B and MRPC pairs), 1.3x on
an AVX2 AMD EPYC, 3.8x on an Intel Xeon with AMX, where OpenVINO computes in bf16 by its own default (its CPU plugin
does so wherever the CPU has bf16 instructions) and the vectors still agree (lowest cosine 0.9999; 1 of the 3,103
STS-B and MRPC pair decisions differs); OpenVINO int8 (NNCF post-training quantization, the feed-forward output layers
kept in fp32) 2.9-3.2x, but its lowest cosine on STS-B sentences is 0.959 (19 of 2,552 below 0.99), so it is not the
default; ONNX Runtime fp32 1.2-1.5x; ONNX Runtime dynamic int8 2.6x with a lowest cosine of 0.978.

``COSTINFER_ENCODER`` chooses: ``auto`` (the default: OpenVINO fp32 where openvino is installed, else torch),
``openvino``, ``openvino-int8`` (faster, approximate: where it passed its agreement check, else fp32), ``torch``. A
GPU always gets torch.

The one-time conversion (and int8 quantization) of the model: ``encoder_export.py``.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from costinfer.errors import ConfigError
from costinfer.reuse.encoder_export import convert, export_lock, quantize, quiet

ENV = "COSTINFER_ENCODER"
RUNTIMES = ("auto", "openvino-int8", "openvino", "torch")
BATCH = 64  # texts per inference: 8, 16 and 128 were no faster on 2 cores
# Texts tokenized in one call, then sorted by their token counts and cut into batches: batches of texts sorted by
# characters were 26% padding, these 5%. 4,000 banking77 texts encoded in 2.36-2.41 s with a call per batch of 64 in
# order of characters, 1.98-2.04 s this way (2.00-2.01 with 4,096 a window, 2.14 with 256). The Ray engine's blocks
# are this size too (``engines/ray_embed.py``): its workers form the same batches, so they compute the same vectors.
TOKENIZE_TEXTS = 1024


class Encoder(Protocol):
    name: str  # what the run's notes and the benchmark call it: torch, openvino, openvino-int8

    def encode(self, texts: list[str], batch: int = BATCH) -> np.ndarray: ...  # unit vectors, in the order given

    # the same vectors a batch at a time as they are computed: (positions in ``texts``, their vectors)
    def stream(self, texts: list[str], batch: int = BATCH) -> Iterator[tuple[list[int], np.ndarray]]: ...


def runtime_choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ConfigError(f"{ENV}={value!r}: give one of {', '.join(RUNTIMES)}")
    return value


def gpu_present() -> bool:
    """A GPU torch could use, told without importing torch (seconds) on a machine that has none."""
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def load_encoder(
    source: str, note: Callable[[str], None] | None = None, threads: int | None = None, device: str | None = None
) -> Encoder:
    """The encoder for the model at ``source`` (a folder or a sentence-transformers name); ``note`` hears of a
    one-time conversion before it starts; ``threads`` bounds the CPU threads and ``device`` (cpu or cuda) is the one
    a Ray worker was given (else the GPU when there is one)."""
    choice = runtime_choice()
    device = device or ("cuda" if gpu_present() else "cpu")
    if choice != "torch" and device == "cpu" and _convertible(source):
        if importlib.util.find_spec("openvino") is not None:
            return OpenVinoEncoder.prepare(Path(source), int8=choice == "openvino-int8", note=note, threads=threads)
        if choice != "auto":
            raise ConfigError(f"{ENV}={choice}: openvino is not installed (pip install 'costinfer[semantic]')")
    return TorchEncoder(source, threads, device)


def _convertible(source: str) -> bool:
    """A local sentence-transformers folder of the shape the OpenVINO encoder reproduces: a transformer, mean
    pooling, normalization, a fast tokenizer."""
    folder = Path(source)
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    others = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(pooling.get(k) for k in others)
    shape = modules == ["Transformer", "Pooling", "Normalize"]
    return shape and bool(mean_only) and (folder / "tokenizer.json").exists()


class TorchEncoder:
    """sentence-transformers on torch: the reference, and the only encoder on a GPU."""

    name = "torch"

    def __init__(self, source: str, threads: int | None = None, device: str | None = None) -> None:
        quiet_libraries()  # their "Loading weights" bar and warnings are not costinfer's output (-q, --json)
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(max(1, threads))
        self.device = device or ("cuda" if gpu_present() else "cpu")
        self.model = SentenceTransformer(source, device=self.device)

    def encode(self, texts: list[str], batch: int = BATCH) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def stream(self, texts: list[str], batch: int = BATCH) -> Iterator[tuple[list[int], np.ndarray]]:
        """Eight batches to a call, shortest texts first (sentence-transformers sorts within a call)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch * 8):
            indexes = order[start : start + batch * 8]
            yield indexes, self.encode([texts[i] for i in indexes], batch)


class OpenVinoEncoder:
    """The model converted to OpenVINO (fp32, or int8 where it agrees with torch), fed by the model's own fast
    tokenizer; two inference requests in flight, so that tokenizing one batch overlaps running the other."""

    def __init__(self, folder: Path, model_xml: Path, name: str, threads: int | None = None) -> None:
        import openvino as ov
        from tokenizers import Tokenizer

        self.name = name
        config = (
            json.loads((folder / "sentence_bert_config.json").read_text())
            if (folder / "sentence_bert_config.json").exists()
            else {}
        )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(config.get("max_seq_length") or 256))
        self.tokenizer.no_padding()  # each batch is padded to its longest text (``_padded``)
        core = ov.Core()
        runtime: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}
        if threads:
            runtime["INFERENCE_NUM_THREADS"] = max(1, threads)
        self.compiled = core.compile_model(core.read_model(str(model_xml)), "CPU", runtime)

    @classmethod
    def prepare(
        cls, folder: Path, int8: bool, note: Callable[[str], None] | None = None, threads: int | None = None
    ) -> OpenVinoEncoder:
        with export_lock(folder) as target:
            fp32 = target / "fp32.xml"
            agreement = target / "agreement.json"
            int8 = int8 and importlib.util.find_spec("nncf") is not None
            if note is not None and (not fp32.exists() or (int8 and not agreement.exists())):
                note(f"converting the embedding model for OpenVINO, once (seconds; int8 about 20 s), into {target}")
            if not fp32.exists():
                with quiet():
                    convert(folder, fp32)
            if int8:
                if not agreement.exists():
                    with quiet():
                        quantize(folder, fp32, target / "int8.xml", agreement, cls, TorchEncoder)
                if json.loads(agreement.read_text()).get("accepted"):
                    return cls(folder, target / "int8.xml", "openvino-int8", threads)
        return cls(folder, fp32, "openvino", threads)

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        return _padded([e.ids for e in self.tokenizer.encode_batch(texts)])

    def _batches(self, texts: list[str], batch: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """(positions in ``texts``, model inputs) of batches of like lengths: the texts in order of characters,
        ``TOKENIZE_TEXTS`` at a time tokenized in one call and cut into batches in order of tokens."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), TOKENIZE_TEXTS):
            window = order[start : start + TOKENIZE_TEXTS]
            ids = [e.ids for e in self.tokenizer.encode_batch([texts[i] for i in window])]
            by_tokens = sorted(range(len(window)), key=lambda j: len(ids[j]))
            for first in range(0, len(by_tokens), batch):
                part = by_tokens[first : first + batch]
                yield [window[j] for j in part], _padded([ids[j] for j in part])

    def encode(self, texts: list[str], batch: int = BATCH) -> np.ndarray:
        if not texts:
            return np.zeros((len(texts), 0), dtype=np.float32)
        parts = list(self.stream(texts, batch))
        vectors = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        for indexes, part in parts:
            vectors[indexes] = part
        return vectors

    def stream(self, texts: list[str], batch: int = BATCH) -> Iterator[tuple[list[int], np.ndarray]]:
        """Batches of like lengths (shortest first, ``_batches``), two inference requests in turn: one runs while the
        next batch is made and while the caller handles the last one's vectors, so the requests never drain before
        the last batch (encoding 512 at a time drained them at each call: the encoder alone was 3.5-7% slower on
        13,083 texts, though no difference showed through the semantic tier)."""
        # no Python callback: OpenVINO's threads never wait for the GIL (a callback did, and a compiled model dropped
        # while one was pending deadlocked its destructor)
        requests = [self.compiled.create_infer_request() for _ in range(2)]
        pending: list[tuple[list[int], np.ndarray] | None] = [None, None]

        def collect(slot: int) -> tuple[list[int], np.ndarray] | None:
            entry, pending[slot] = pending[slot], None
            if entry is None:
                return None
            indexes, mask = entry
            requests[slot].wait()
            return indexes, _mean_pooled(requests[slot].get_output_tensor(0).data, mask)

        n = 0
        try:
            for n, (indexes, feeds) in enumerate(self._batches(texts, batch)):  # made while the other slot runs
                slot = n % 2
                done = collect(slot)
                requests[slot].start_async(feeds)
                pending[slot] = (indexes, feeds["attention_mask"])
                if done is not None:
                    yield done
            for slot in ((n + 1) % 2, n % 2):  # the older request first
                done = collect(slot)
                if done is not None:
                    yield done
        finally:  # a caller that stops early: no request is left running into a dropped model
            for slot in (0, 1):
                if pending[slot] is not None:
                    requests[slot].wait()


def _padded(ids: list[list[int]]) -> dict[str, np.ndarray]:
    """The model's inputs for a batch: token ids padded with 0 (the padding id) to the longest, and the mask."""
    lengths = np.array([len(row) for row in ids])
    mask = (np.arange(lengths.max()) < lengths[:, None]).astype(np.int64)
    input_ids = np.zeros(mask.shape, dtype=np.int64)
    input_ids[mask.astype(bool)] = np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(lengths.sum()))
    return {"input_ids": input_ids, "attention_mask": mask}


def _mean_pooled(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    summed = (tokens * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    unit: np.ndarray = summed / np.clip(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12, None)
    return unit.astype(np.float32, copy=False)


def quiet_libraries() -> None:
    """No progress bar or advisory warning from transformers while the model loads."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
