"""Device and precision, chosen in one place and passed in."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

__all__ = ["cpu_supports_bf16", "training_precision", "accelerator"]

log = logging.getLogger(__name__)


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16), where
    oneDNN runs bf16 convolutions at about twice the fp32 speed. Without it bf16 is emulated
    and slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def accelerator(device: str) -> str:
    """handseg's --device -> Lightning's accelerator name."""
    return {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "mps": "mps"}.get(
        device, device
    )


def training_precision(device: str, precision: str) -> str:
    """``auto``: bf16 mixed precision on GPUs that have it (else fp16 mixed) and on CPUs with
    native bf16; full fp32 elsewhere."""
    if precision != "auto":
        return {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed"}.get(precision, precision)
    acc = accelerator(device)
    if acc in ("gpu", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if acc in ("cpu", "auto") and cpu_supports_bf16():
        return "bf16-mixed"
    return "32-true"
