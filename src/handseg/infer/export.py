"""ONNX export of a handseg model, and reading the exported file back.

The exported file is self-describing, so ``handseg.load_model("model.onnx")`` works without
the ``model.pt`` it came from:

- input ``"image"``: (B, 3, H, W) float32, already normalised (z-score with the stored mean
  and std); B, H and W are dynamic and H, W need not be multiples of 16;
- output ``"logits"``: (B, C, H, W) float32;
- ``metadata_props``: the model card (:mod:`handseg.infer.onnx_file`): classes,
  normalisation, input size, and ``handseg.meta`` with the whole card (architecture,
  training options, metrics, versions).

The network pads its input to a multiple of the output stride (16) and crops the logits
back. For the export a thin wrapper does that padding unconditionally, with amounts
computed from the traced input shape, so the graph pads correctly at every size (an export
traced at 64 x 80 runs at 101 x 77). The classic TorchScript exporter is used
(``dynamo=False``): it needs no extra packages and handles the shape arithmetic.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handseg.core.errors import HandsegError
from handseg.infer.onnx_file import INPUT_NAME, OUTPUT_NAME, ort_session, save_proto, set_metadata
from handseg.model.card import ModelCard
from handseg.model.checkpoint import read_model_file
from handseg.model.crop_net import CropSegNet

log = logging.getLogger(__name__)
MIN_MASK_AGREEMENT = 0.999
_TRACE_SIZE = (64, 80)  # any size works: the padding is computed from the dynamic shape


class _PadToStride(nn.Module):
    """Export wrapper: pad (bottom/right) to a multiple of the output stride, run the
    network, crop the logits back. (B, 3, H, W) -> (B, C, H, W) for any H, W.

    Padding always (possibly by zero) keeps the pad amounts in the traced graph; the
    network's own ``if ph or pw`` would be frozen at the traced size.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        stride = getattr(self.net, "output_stride", None) or self.net.cfg.output_stride
        ph = (stride - h % stride) % stride
        pw = (stride - w % stride) % stride
        x = F.pad(x, (0, pw, 0, ph))
        return self.net(x)[..., :h, :w]


def _trace_to_proto(model: nn.Module, opset: int) -> Any:
    """The network as an ``onnx.ModelProto`` with dynamic batch, height and width (a crop
    segmenter: dynamic batch, traced at its crop size, which it always runs at)."""
    import onnx

    wrapper = _PadToStride(model).eval()  # eval() on the wrapper too: the exporter honours it
    if isinstance(model, CropSegNet):
        dummy = torch.zeros(1, model.in_channels, model.cfg.crop_size, model.cfg.crop_size)
    else:
        dummy = torch.zeros(1, 3, *_TRACE_SIZE)
    buf = io.BytesIO()
    dyn = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter about the old exporter
        torch.onnx.export(
            wrapper,
            (dummy,),
            buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dyn, OUTPUT_NAME: dyn},
            opset_version=opset,
            do_constant_folding=True,  # folds BatchNorm into the convolutions
        )
    proto = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(proto)
    return proto


def _inline_identity_initializers(proto: Any) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer.

    The exporter shares equal constants (e.g. the zero biases of an untrained network)
    through Identity nodes; quantisation wants every conv bias to be an initializer.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = proto.graph.initializer.add()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
        else:
            keep.append(node)
    if len(keep) != len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(keep)


def export_module(
    model: nn.Module, card: ModelCard, out_path: str | Path, *, opset: int = 17
) -> Path:
    """Export an in-memory network with its card to ``out_path`` (atomic write), without
    a parity check. ``model`` is a :class:`~handseg.model.network.HandSegNet`."""
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    proto = _trace_to_proto(model, opset)
    set_metadata(proto, card, "fp32")
    return save_proto(proto, Path(out_path))


def _check_shapes(input_size: tuple[int, int], n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """(B, 3, H, W) shapes for the parity check: the training size (capped at 384 x 512 in
    area to keep the check quick), a batch of 2 and sizes that are not multiples of 16."""
    h, w = input_size
    s = min(1.0, math.sqrt(384 * 512 / (h * w)))
    h, w = max(32, round(h * s)), max(32, round(w * s))
    shapes = [(1, 3, h, w), (2, 3, h * 3 // 4 + 3, w * 3 // 4 + 5), (1, 3, h // 2 + 7, w // 2 + 1)]
    rng = np.random.default_rng(seed)
    while len(shapes) < n:
        shapes.append((1, 3, int(rng.integers(17, h + 1)), int(rng.integers(17, w + 1))))
    return shapes[:n]


def _test_input(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random image plus noise, in normalised units: (B, 3, H, W) float32."""
    b, c, h, w = shape
    coarse = torch.from_numpy(rng.uniform(-2, 2, (b, c, h // 8 + 2, w // 8 + 2)).astype(np.float32))
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).numpy()
    return (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)


def parity_check(
    model: nn.Module, onnx_path: str | Path, shapes: list[tuple[int, ...]], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Run the PyTorch model and the ONNX file on the same random inputs.

    Returns one dict per shape: ``shape``, ``max_abs_diff`` (logits) and ``mask_agreement``
    (share of pixels whose argmax class is the same).
    """

    sess = ort_session(onnx_path)
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        x = _test_input(shape, rng)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        got = sess.run(None, {INPUT_NAME: x})[0]
        if got.shape != ref.shape:
            raise HandsegError(
                f"ONNX export: the exported model gives logits of shape {got.shape} for input "
                f"{shape}, the PyTorch model {ref.shape}; please report this as a bug"
            )
        out.append(
            {
                "shape": list(shape),
                "max_abs_diff": float(np.abs(got - ref).max()),
                "mask_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            }
        )
    return out


def export_onnx(
    model_path: str | Path,
    out_path: str | Path,
    *,
    opset: int = 17,
    check: bool = True,
    n_checks: int = 3,
) -> dict[str, Any]:
    """Export ``model.pt`` to a self-describing ONNX file (see the module docstring).

    With ``check``, the file is compared with the PyTorch model on ``n_checks`` random inputs
    of different sizes (batch 1 and 2, sizes that are not multiples of 16) before it
    replaces ``out_path``: a mask agreement below 99.9 % raises :class:`HandsegError` and
    leaves no file. Returns ``{"path", "opset", "size_mb", "checks": [...],
    "max_abs_diff", "min_mask_agreement"}`` (the last two None without a check).
    """
    import onnx  # heavy, optional until a file is exported

    model, card = read_model_file(model_path)
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise HandsegError(f"--out {out}: the ONNX file name should end in .onnx")
    if out.is_dir():
        raise HandsegError(f"--out {out} is a folder; pass a file name such as {out}/model.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        proto = _trace_to_proto(model, opset)
    except Exception as exc:  # the exporter raises many types; show one line
        raise HandsegError(
            f"ONNX export of {model_path} at opset {opset} failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None
    set_metadata(proto, card, "fp32")
    onnx.checker.check_model(proto)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_proto(proto, tmp)
        checks: list[dict[str, Any]] = []
        if check:
            if isinstance(model, CropSegNet):  # runs at its crop size only: batches of 1, 2
                c, size = model.in_channels, model.cfg.crop_size
                shapes = [(1, c, size, size), (2, c, size, size)]
            else:
                shapes = _check_shapes(card.input_size, n_checks)
            checks = parity_check(model, tmp, shapes)
            _require_parity(checks, f"ONNX export of {model_path}", out)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(out),
        "opset": opset,
        "size_mb": round(out.stat().st_size / 2**20, 1),
        "checks": checks,
        "max_abs_diff": max((c["max_abs_diff"] for c in checks), default=None),
        "min_mask_agreement": min((c["mask_agreement"] for c in checks), default=None),
    }


def _require_parity(checks: list[dict[str, Any]], what: str, out: Path) -> None:
    """Log each parity check; raise :class:`HandsegError` when the worst mask agreement is
    below :data:`MIN_MASK_AGREEMENT`."""
    for c in checks:
        log.info(
            "parity %s: max |logit difference| %.3g, mask agreement %.4f %%",
            "x".join(map(str, c["shape"])),
            c["max_abs_diff"],
            100 * c["mask_agreement"],
        )
    worst = min(checks, key=lambda c: c["mask_agreement"])
    if worst["mask_agreement"] < MIN_MASK_AGREEMENT:
        raise HandsegError(
            f"{what} does not match the PyTorch model: mask "
            f"agreement {100 * worst['mask_agreement']:.3f} % < 99.9 % at input "
            f"{'x'.join(map(str, worst['shape']))} (max logit difference "
            f"{worst['max_abs_diff']:.3g}); {out} was not written. Try another --opset"
        )
