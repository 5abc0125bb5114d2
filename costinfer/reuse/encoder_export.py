"""The semantic tier's model converted for OpenVINO (``encoders.py`` runs it), once.

The OpenVINO model is made once per model, from the weights already on disk (never downloaded), into a folder beside
the model when it is writable (else under ``~/.cache/costinfer/encoders``): the fp32 model converted from torch, and,
when asked for, the int8 model quantized on packaged calibration texts and kept only if every one of the packaged check
texts has a cosine of at least ``AGREEMENT_MIN`` to torch's vector (``agreement.json`` records the figures).
Concurrent processes wait for one another on a lock file instead of converting twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

AGREEMENT_MIN = 0.99  # the lowest cosine to torch's vector the int8 model may have on any check text
EXPORT_VERSION = "1"  # bump when the export changes: a new folder is made beside the old
# the layers whose inputs (GELU outputs, with outliers) lose most in int8: kept in fp32 (lowest cosine 0.984 -> 0.992)
_KEEP_FP32 = [r".*encoder\.layer\.\d+\.output\.dense/.*"]
_CALIBRATION = Path(__file__).with_name("calibration_texts.txt")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """NNCF's and the converter's logs and progress bars are not costinfer's output (-q, --json)."""
    import logging
    import warnings

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            nncf_log.setLevel(level)


def export_dir(folder: Path) -> Path:
    """Beside the model when its folder is writable, else in the user's cache (named for the model's weights)."""
    beside = folder / f"openvino-costinfer-{EXPORT_VERSION}"
    if os.access(folder, os.W_OK) or beside.exists():
        return beside
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    stamp = hashlib.sha256(
        "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "costinfer" / "encoders" / f"{folder.name}-{stamp}-{EXPORT_VERSION}"


@contextlib.contextmanager
def export_lock(folder: Path) -> Iterator[Path]:
    target = export_dir(folder)
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converting waits here, then finds the files made
        try:
            yield target
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _torch_model(folder: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def convert(folder: Path, target: Path) -> None:
    """torch -> OpenVINO, written into a temporary folder and moved into place (a kill leaves no half model)."""
    import openvino as ov
    import torch

    transformer = _torch_model(folder)[0].auto_model.eval()

    class TokenStates(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state

    example = torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        model = ov.convert_model(
            TokenStates(transformer),
            example_input={"input_ids": example, "attention_mask": example},
            input=[("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)],
        )
    _save(model, target)


def _save(model: Any, target: Path) -> None:
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        ov.save_model(model, str(Path(tmp) / target.name), compress_to_fp16=False)
        os.replace(Path(tmp) / target.with_suffix(".bin").name, target.with_suffix(".bin"))
        os.replace(Path(tmp) / target.name, target)


def calibration_texts() -> tuple[list[str], list[str]]:
    """The packaged texts: every other one calibrates the int8 model, the rest check it."""
    texts = [line for line in _CALIBRATION.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    texts = [t.replace("\\n", "\n") for t in texts]
    return texts[0::2], texts[1::2]


def quantize(folder: Path, fp32: Path, target: Path, agreement: Path, openvino: Any, torch: Any) -> None:
    """NNCF post-training int8 quantization, calibrated on packaged texts; kept only if it agrees with torch.
    ``openvino`` and ``torch``: the encoder classes (``encoders.py``) that feed the model and judge it."""
    import nncf
    import openvino as ov

    started = time.perf_counter()
    calibrate, check = calibration_texts()
    fp32_encoder = openvino(folder, fp32, "openvino")
    batches = [fp32_encoder._feeds(calibrate[i : i + 16]) for i in range(0, len(calibrate), 16)]
    quantized = nncf.quantize(
        ov.Core().read_model(str(fp32)),
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(patterns=_KEEP_FP32, validate=False),
    )
    _save(quantized, target)
    reference = torch(str(folder)).encode(check)
    cosines = (openvino(folder, target, "openvino-int8").encode(check) * reference).sum(axis=1)
    figures = {
        "accepted": bool(cosines.min() >= AGREEMENT_MIN),
        "min_cosine": round(float(cosines.min()), 5),
        "mean_cosine": round(float(cosines.mean()), 5),
        "check_texts": len(check),
        "agreement_min": AGREEMENT_MIN,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not figures["accepted"]:
        for suffix in (".xml", ".bin"):
            target.with_suffix(suffix).unlink(missing_ok=True)
    tmp = agreement.with_name(agreement.name + ".tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    os.replace(tmp, agreement)
