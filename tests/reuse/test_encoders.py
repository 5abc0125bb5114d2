"""The semantic tier's encoders: OpenVINO converted once from the weights on disk, agreeing with torch's vectors."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from costinfer.errors import ConfigError
from costinfer.reuse import encoder_export, encoders
from costinfer.reuse.embeddings import DEFAULT_MODEL, model_source
from costinfer.reuse.encoder_export import export_dir
from costinfer.reuse.encoders import OpenVinoEncoder, TorchEncoder, load_encoder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None or importlib.util.find_spec("openvino") is None,
    reason="the semantic extra (sentence-transformers, openvino) is not installed",
)

TEXTS = [
    "my card has not arrived yet",
    "How do I reset the PIN of my debit card?",
    "A man is playing a guitar on the street.",
    "The company's shares fell 3 percent after it cut its forecast for the year, citing weaker demand in Europe.",
    "",
    "ok",
    "Customer message: I was charged twice for the same coffee\nIntent label:",
]


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The packaged model's files in a folder of the test's own: its conversion is made there, fresh."""
    source = Path(model_source(DEFAULT_MODEL))
    copy = tmp_path / "model"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("openvino-costinfer-*"))
    return copy


def test_openvino_is_converted_once_beside_the_model_and_gives_torchs_vectors(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(encoders.ENV, "auto")
    heard: list[str] = []
    first = load_encoder(str(model_copy), heard.append)
    assert isinstance(first, OpenVinoEncoder) and first.name == "openvino"
    target = export_dir(model_copy)
    assert target.parent == model_copy and (target / "fp32.xml").exists() and (target / "fp32.bin").exists()
    assert len(heard) == 1 and "once" in heard[0]
    made = (target / "fp32.bin").stat().st_mtime_ns
    again = load_encoder(str(model_copy), heard.append)
    assert (target / "fp32.bin").stat().st_mtime_ns == made and len(heard) == 1  # found, not converted again
    reference = TorchEncoder(str(model_copy)).encode(TEXTS)
    vectors = again.encode(TEXTS)
    assert vectors.shape == reference.shape == (len(TEXTS), 384)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the order given is the order returned, whatever the batching by length
    assert np.allclose(again.encode(TEXTS[::-1]), vectors[::-1], atol=1e-5)
    assert again.encode([]).shape[0] == 0


def test_the_choice_of_encoder(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(encoders.ENV, "torch")
    assert isinstance(load_encoder(str(model_copy)), TorchEncoder)
    monkeypatch.setenv(encoders.ENV, "fastest")
    with pytest.raises(ConfigError, match="COSTINFER_ENCODER='fastest'"):
        load_encoder(str(model_copy))
    # a model of another shape (no mean pooling) is left to sentence-transformers
    pooling = model_copy / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    monkeypatch.setenv(encoders.ENV, "auto")
    assert isinstance(load_encoder(str(model_copy)), TorchEncoder)
    assert not export_dir(model_copy).exists()


def test_a_model_folder_that_cannot_be_written_converts_into_the_users_cache(
    model_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this suite may run as root, for whom every folder is writable: os.access is made to say "no" for the model
    real_access = encoder_export.os.access
    monkeypatch.setattr(
        encoder_export.os, "access", lambda p, mode: False if Path(p) == model_copy else real_access(p, mode)
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = export_dir(model_copy)
    assert target.is_relative_to(tmp_path / "cache" / "costinfer" / "encoders")
    assert load_encoder(str(model_copy)).name == "openvino"
    assert (target / "fp32.xml").exists() and not list(model_copy.glob("openvino-costinfer-*"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_int8_is_kept_only_with_its_agreement_figures(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(encoders.ENV, "openvino-int8")
    encoder = load_encoder(str(model_copy))
    figures = json.loads((export_dir(model_copy) / "agreement.json").read_text())
    assert figures["check_texts"] == len(encoder_export.calibration_texts()[1]) > 100
    assert figures["accepted"] == (figures["min_cosine"] >= encoder_export.AGREEMENT_MIN)
    assert encoder.name == ("openvino-int8" if figures["accepted"] else "openvino")
    if figures["accepted"]:
        _, check = encoder_export.calibration_texts()
        cosines = (encoder.encode(check) * TorchEncoder(str(model_copy)).encode(check)).sum(axis=1)
        assert cosines.min() >= encoder_export.AGREEMENT_MIN - 1e-4


@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_streamed_batches_give_every_text_once_with_encodes_vectors(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Embedder takes vectors a batch at a time as they are computed (progress, saving), over all its texts at
    once, so the encoder's two requests stay busy across them: each text comes once, shortest batches first, with
    the vectors ``encode`` gives; a caller that stops early leaves the encoder usable."""
    monkeypatch.setenv(encoders.ENV, runtime)
    encoder = load_encoder(model_source(DEFAULT_MODEL))
    assert encoder.name == runtime
    whole = encoder.encode(TEXTS)
    parts = list(encoder.stream(TEXTS, batch=2))
    seen = [i for indexes, _ in parts for i in indexes]
    assert sorted(seen) == list(range(len(TEXTS)))
    assert [len(TEXTS[i]) for i in seen] == sorted(len(t) for t in TEXTS)  # shortest first: batches pad least
    for indexes, vectors in parts:
        assert vectors.shape == (len(indexes), 384)
        assert np.allclose(vectors, whole[indexes], atol=2e-3)  # bf16 on AMX: padding moves the last digits
    stopped = encoder.stream(TEXTS, batch=1)
    next(stopped)
    stopped.close()  # requests still in flight are waited for, not left running
    assert np.allclose(encoder.encode(TEXTS), whole, atol=2e-3)
    assert list(encoder.stream([])) == []
