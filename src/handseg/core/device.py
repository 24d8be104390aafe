"""Device and precision, chosen in one place and passed in.

Training and prediction share one ``--precision`` vocabulary (:data:`PRECISIONS`); older
spellings are kept as aliases (:data:`PRECISION_ALIASES`: ``32`` and ``32-true`` mean
``fp32``, ``bf16-mixed`` means ``bf16``, ``16`` and ``16-mixed`` mean ``fp16``).

- :func:`resolve_device` turns ``--device`` into a torch device string;
  :func:`accelerator` into Lightning's accelerator name;
- :func:`training_precision` picks Lightning's precision for a training run;
- :func:`inference_path` picks the (runtime, precision) a trained network runs at, and
  :func:`choose_inference_path` says why;
- :func:`bf16_support` and :func:`int8_support` say whether this machine can serve them,
  :func:`int8_speedup` whether int8 is faster than fp32 here.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from handseg.core.errors import HandsegError

__all__ = [
    "DEVICES",
    "INFERENCE_PRECISIONS",
    "PRECISIONS",
    "PRECISION_ALIASES",
    "PRECISION_SPELLINGS",
    "RUNTIMES",
    "TRAIN_PRECISIONS",
    "InferencePath",
    "accelerator",
    "bf16_support",
    "canonical_precision",
    "choose_inference_path",
    "cpu_flags",
    "inference_path",
    "int8_speedup",
    "int8_status",
    "int8_support",
    "resolve_device",
    "training_precision",
]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu", "cuda", "mps")
"""``--device``: ``auto`` is the first CUDA GPU where there is one, else the CPU; ``gpu``
means ``cuda``; ``cuda:1`` style indices are accepted too."""
RUNTIMES = ("auto", "torch", "onnx")
"""``--runtime`` of prediction: eager PyTorch or onnxruntime."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
"""The one ``--precision`` vocabulary. Training takes :data:`TRAIN_PRECISIONS` (bf16 and
fp16 as mixed precision), prediction :data:`INFERENCE_PRECISIONS`."""
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_ALIASES = {
    "32": "fp32",
    "32-true": "fp32",
    "float32": "fp32",
    "bf16-mixed": "bf16",
    "16": "fp16",
    "16-mixed": "fp16",
}
"""Older spellings (Lightning's, from ``handseg train --precision``) -> the vocabulary."""
PRECISION_SPELLINGS = PRECISIONS + tuple(PRECISION_ALIASES)
"""Every accepted ``--precision`` value (for argparse ``choices``)."""
_LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
# CPU inference paths, fastest first among those that keep the hand IoU (inference_path):
# ``auto`` takes the first one that the request and the machine allow (int8 only where
# int8_speedup says it is faster than fp32)
_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("onnx", "int8"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("torch", "fp32"),
)
_X86 = ("x86_64", "amd64", "i386", "i686")
_ARM = ("arm64", "aarch64")
_VNNI = ("avx512_vnni", "avx_vnni")
"""x86 flags of the int8 dot-product instructions (VNNI) that make int8 faster than fp32."""
_ARM_DOT = "asimddp"
"""The Arm dot-product flag (SDOT/UDOT) in /proc/cpuinfo's Features line."""


# --- devices ------------------------------------------------------------------------------
def resolve_device(device: str | None) -> str:
    """``--device`` -> a torch device string: ``auto`` (or None) is ``cuda`` where a CUDA GPU
    is available, else ``cpu``; ``gpu`` is ``cuda``. A CUDA device on a machine without one
    raises :class:`HandsegError`."""
    if device in ("auto", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device == "gpu":
        device = "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HandsegError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    return device


def accelerator(device: str) -> str:
    """handseg's ``--device`` -> Lightning's accelerator name."""
    return {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "mps": "mps"}.get(
        device, device
    )


# --- what this machine supports ------------------------------------------------------------
@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_support(device: str = "cpu") -> tuple[bool, str]:
    """(supported, reason): can PyTorch run bf16 convolutions natively on ``device``?

    On the CPU that needs oneDNN and native bf16 (AVX512-BF16 or AMX-BF16), where bf16
    convolutions run at about twice the fp32 speed; elsewhere bf16 is emulated and slower
    than fp32."""
    if torch.device(device).type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, "the GPU supports bf16"
        return False, "the GPU has no bf16 support"
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (mkldnn)"
    native = {"avx512_bf16", "amx_bf16"} & cpu_flags()
    if not native:
        return False, "the CPU has no native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
    return True, f"CPU flags {', '.join(sorted(native))}"


def int8_support() -> tuple[bool, str]:
    """(supported, reason): can onnxruntime quantise and run int8 convolutions here?"""
    try:
        import onnxruntime.quantization  # noqa: F401  (heavy, optional at run time)
    except ImportError as exc:
        return False, f"onnxruntime.quantization is not importable ({exc})"
    machine = platform.machine().lower()
    if machine in _X86:
        flags = cpu_flags()
        if flags and not ({"avx2", "avx512_vnni", "avx_vnni", "avx512bw"} & flags):
            return False, "the CPU lacks AVX2/VNNI, which onnxruntime's int8 kernels need"
    elif machine not in _ARM:
        return False, f"no int8 kernels for {machine}"
    return True, "onnxruntime int8 (QDQ)"


def int8_speedup() -> tuple[bool, str]:
    """(faster, reason): is onnxruntime int8 faster than fp32 on this CPU?

    Only with int8 dot-product instructions: VNNI on x86 (avx512_vnni or avx_vnni), the
    dot-product extension on Arm (asimddp). Without them onnxruntime's int8 kernels are
    slower than fp32 (AVX2, no VNNI: 111.7 ms against 104.5 ms for a 384 x 512 photo),
    so ``auto`` does not take int8 (an explicit ``--precision int8`` still runs it). A CPU
    whose flags cannot be read (no /proc/cpuinfo) counts as without them."""
    flags, machine = cpu_flags(), platform.machine().lower()
    if not flags:
        return False, "this CPU's features cannot be read (no /proc/cpuinfo)"
    if machine in _X86:
        vnni = sorted(set(_VNNI) & flags)
        if vnni:
            return True, f"this CPU has VNNI ({', '.join(vnni)})"
        return False, "this CPU has no VNNI"
    if machine in _ARM:
        if _ARM_DOT in flags:
            return True, f"this CPU has the Arm dot-product instructions ({_ARM_DOT})"
        return False, f"this CPU has no Arm dot-product instructions ({_ARM_DOT})"
    return False, f"no int8 kernels for {machine}"


def int8_status(onnx_file: str | None = None, calibrated: bool = True) -> tuple[bool, str]:
    """(possible, reason): can a network run in int8 here? An ONNX file that is already
    int8 (``onnx_file="int8"``) always can; anything else needs onnxruntime's int8 kernels
    (:func:`int8_support`) and calibration images to quantise with."""
    if onnx_file == "int8":
        return True, "the ONNX file is quantised to int8"
    ok, why = int8_support()
    if ok and not calibrated:
        return False, (
            "int8 needs calibration images and none were given (pass calibration=..., "
            "e.g. the model's training images)"
        )
    return ok, why


# --- precision -----------------------------------------------------------------------------
def canonical_precision(text: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """A ``--precision`` value (any spelling of :data:`PRECISION_SPELLINGS`) -> its name in
    :data:`PRECISIONS`; one that is not in ``allowed`` raises :class:`HandsegError`."""
    key = str(text).strip().lower()
    name = PRECISION_ALIASES.get(key, key)
    if name not in allowed:
        raise HandsegError(f"--precision {text}: choose one of {', '.join(allowed)}")
    return name


def training_precision(device: str, precision: str) -> str:
    """``--precision`` of a training run -> Lightning's precision string.

    ``auto``: bf16 mixed precision on GPUs that have it (else fp16 mixed) and on CPUs with
    native bf16; full fp32 elsewhere. ``bf16`` and ``fp16`` train in mixed precision."""
    name = canonical_precision(precision, TRAIN_PRECISIONS)
    if name != "auto":
        return _LIGHTNING_PRECISION[name]
    acc = accelerator(device)
    if acc in ("gpu", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if acc in ("cpu", "auto") and bf16_support("cpu")[0]:
        return "bf16-mixed"
    return "32-true"


@dataclass(frozen=True)
class InferencePath:
    """The (runtime, precision) a network runs at, and why (one line, for the log)."""

    runtime: str
    precision: str
    reason: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}: {self.reason}"


def inference_path(
    runtime: str = "auto",
    precision: str = "auto",
    *,
    device: str = "cpu",
    onnx_file: str | None = None,
    calibrated: bool = True,
) -> tuple[str, str]:
    """The (runtime, precision) a trained network runs at, fallbacks applied: that of
    :func:`choose_inference_path` (which also says why)."""
    chosen = choose_inference_path(
        runtime, precision, device=device, onnx_file=onnx_file, calibrated=calibrated
    )
    return chosen.runtime, chosen.precision


def choose_inference_path(
    runtime: str = "auto",
    precision: str = "auto",
    *,
    device: str = "cpu",
    onnx_file: str | None = None,
    calibrated: bool = True,
) -> InferencePath:
    """The (runtime, precision) a trained network runs at, fallbacks applied, and why.

    ``onnx_file``: None for PyTorch weights, else the ONNX file's precision (``fp32`` or
    ``int8``; an int8 file always runs int8). ``calibrated``: calibration images are at
    hand to quantise a network that is not int8 yet.

    ``auto`` takes the fastest path that this CPU can do, among those whose hand IoU on the
    arsl-bg11 test split stays within 0.005 of fp32 eager PyTorch, measured with
    ``benchmarks/inference_speed.py`` (batch 1, 2 threads, 2-core AMD EPYC with avx512_bf16
    and avx512_vnni; the scratch model trained at 384 x 512, 6 test images; paths timed
    round-robin under load, so absolute times are inflated, the order is what counts)::

        path         ms/img @384x512   x smp baseline   hand IoU   vs fp32
        torch fp32   815               0.88             0.9553     +0.0000
        torch bf16   474               1.51             0.9553     +0.0000
        onnx fp32    654               1.10             0.9553     +0.0000
        onnx int8    254               2.83             0.9554     +0.0001

    that is the first of onnx int8, torch bf16, onnx fp32, torch fp32 that the request and
    the machine allow: int8 only where the CPU has int8 dot-product instructions
    (:func:`int8_speedup`: VNNI on x86, asimddp on Arm; on AVX2 without VNNI int8 takes
    111.7 ms against onnx fp32's 104.5 ms for a 384 x 512 photo) and calibration images are
    given, bf16 only with native bf16 (:func:`bf16_support`), else onnx fp32. On a GPU
    ``auto`` is torch fp32. An explicit bf16 or int8 request this machine cannot serve runs
    fp32 with a one-line warning; an impossible combination (e.g. int8 on PyTorch) raises
    :class:`HandsegError`.
    """
    if runtime not in RUNTIMES:
        raise HandsegError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    precision = canonical_precision(precision, INFERENCE_PRECISIONS)
    support = {
        "fp32": (True, ""),
        "bf16": bf16_support(device),
        "int8": int8_status(onnx_file, calibrated),
    }
    # what auto may take: int8 only where it is faster than fp32 (an int8 file runs int8)
    faster, why = int8_speedup()
    auto_support = dict(support)
    if onnx_file != "int8" and not faster:
        auto_support["int8"] = (False, f"{why}, so int8 would be slower")
    rt, pr = _requested_path(runtime, precision, device, onnx_file is not None, auto_support)
    reason = _auto_reason(rt, pr, runtime, precision, device, onnx_file, auto_support, why)
    if onnx_file == "int8" and pr != "int8":
        if precision == "fp32":
            log.warning("the ONNX file is quantised to int8: running it as int8")
        pr, reason = "int8", support["int8"][1]
    if pr in ("bf16", "int8") and not support[pr][0]:
        log.warning("%s is not supported here (%s): running fp32 instead", pr, support[pr][1])
        reason = f"{pr} is not supported here ({support[pr][1]})"
        pr = "fp32"
    return InferencePath(rt, pr, reason)


def _auto_reason(
    rt: str,
    pr: str,
    runtime: str,
    precision: str,
    device: str,
    onnx_file: str | None,
    support: dict[str, tuple[bool, str]],
    int8_why: str,
) -> str:
    """Why (rt, pr) answers the request: the faster paths ``auto`` passed over and what
    they lack; ``support`` is what ``auto`` may take."""
    if "auto" not in (runtime, precision):
        return "as requested"
    if torch.device(device).type != "cpu":
        return f"PyTorch fp32 on {device}"
    if precision != "auto":
        if onnx_file is not None:
            return "an ONNX file runs on onnxruntime"
        return "the faster runtime for fp32" if pr == "fp32" else f"{pr} runs on {rt}"
    if pr == "int8":
        return support["int8"][1] if onnx_file == "int8" else f"{int8_why}, where int8 is fastest"
    notes = []
    if runtime != "torch":  # int8 was a candidate
        notes.append(support["int8"][1])
    if pr == "bf16":
        notes.append(f"bf16 is native here ({support['bf16'][1]})")
    elif runtime != "onnx" and onnx_file is None:  # bf16 was a candidate
        notes.append(support["bf16"][1])
    return "; ".join(notes) or "the fastest path left"


def _requested_path(
    runtime: str,
    precision: str,
    device: str,
    onnx_only: bool,
    support: dict[str, tuple[bool, str]],
) -> tuple[str, str]:
    """(runtime, precision) for a request, before the fallbacks of explicit requests:
    ``auto`` takes the first supported path of ``_PREFERENCE`` that the other argument
    allows; an explicit precision implies its runtime (bf16 -> torch, int8 -> onnx)."""
    if torch.device(device).type != "cpu":
        if runtime == "onnx" or onnx_only:
            raise HandsegError(
                f"--runtime onnx runs on the CPU only, not on {device}; use --device cpu "
                "(or a model.pt with --runtime torch)"
            )
        if precision == "int8":
            raise HandsegError("--precision int8 runs on the CPU only; use --device cpu")
        return "torch", "fp32" if precision == "auto" else precision
    if onnx_only and runtime == "torch":
        raise HandsegError(
            "--runtime torch needs the PyTorch weights, an ONNX file has none: pass the "
            "model.pt or use --runtime onnx"
        )
    if runtime == "torch" and precision == "int8":
        raise HandsegError("--precision int8 runs on onnxruntime: use --runtime onnx or auto")
    if (runtime == "onnx" or onnx_only) and precision == "bf16":
        raise HandsegError("--precision bf16 runs on PyTorch: use --runtime torch or auto")
    candidates = [
        (rt, pr)
        for rt, pr in _PREFERENCE
        if runtime in ("auto", rt)
        and precision in ("auto", pr)
        and not (onnx_only and rt == "torch")
        and (precision != "auto" or support[pr][0])  # explicit requests fall back later
    ]
    return candidates[0]
