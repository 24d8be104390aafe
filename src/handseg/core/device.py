"""Device and precision, chosen in one place and passed in."""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_support() -> tuple[bool, str]:
    """(supported, reason): can PyTorch run bf16 convolutions natively on this CPU?"""
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (mkldnn)"
    flags = cpu_flags()
    native = {"avx512_bf16", "amx_bf16"} & flags
    if not native:
        return False, "the CPU has no native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
    return True, f"CPU flags {', '.join(sorted(native))}"


def int8_support() -> tuple[bool, str]:
    """(supported, reason): can onnxruntime quantise and run int8 convolutions here?"""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        return False, f"onnxruntime.quantization is not importable ({exc})"
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        flags = cpu_flags()
        if flags and not ({"avx2", "avx512_vnni", "avx_vnni", "avx512bw"} & flags):
            return False, "the CPU lacks AVX2/VNNI, which onnxruntime's int8 kernels need"
    elif machine not in ("arm64", "aarch64"):
        return False, f"no int8 kernels for {machine}"
    return True, "onnxruntime int8 (QDQ)"
