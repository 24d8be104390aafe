"""A TFLite graph as a PyTorch module: MediaPipe's hand networks as trainable encoders.

:func:`read_tflite` parses a ``.tflite`` flatbuffer (the ``tflite`` package's generated
reader; no TensorFlow) into a :class:`Program`: the operators in execution order with
their options (strides, padding, fused activations, ...) as plain containers, and the
constant tensors as numpy arrays (float16 weights pass through ``DEQUANTIZE`` and are
folded to float32 here). :class:`TFLiteNet` executes a program with torch ops; its
weights are ``nn.Parameter`` s, so the network can be fine-tuned, saved in ``model.pt``
(the program is plain data: it travels in the model card) and rebuilt without the file.

Generic over the operators of MediaPipe's hand models: CONV_2D, DEPTHWISE_CONV_2D, ADD,
MEAN, FULLY_CONNECTED, LOGISTIC (landmark model) and PRELU, PAD, MAX_POOL_2D,
RESIZE_BILINEAR, RESHAPE, CONCATENATION (palm detector). Layout: 4-D activations are kept
NCHW (torch's), and turned back to NHWC where TFLite's flattening order matters (RESHAPE,
FULLY_CONNECTED of a 4-D tensor); TFLite's ``SAME`` padding (more at the end for even
kernels / strides) is reproduced with an explicit ``F.pad``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handseg.core.errors import HandsegError

__all__ = ["Program", "TFLiteNet", "feature_taps", "read_tflite"]

SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "LOGISTIC",
    "PRELU", "PAD", "MAX_POOL_2D", "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION",
)  # fmt: skip
_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
_INSTALL_HINT = "reading .tflite files needs the 'hands' extra: pip install 'handseg[hands]'"


@dataclass
class Program:
    """A TFLite graph as plain data.

    ``ops``: list of ``{"op": NAME, "inputs": [tensor ids], "outputs": [tensor ids],
    "options": {...}}``; ``shapes``: tensor id -> shape (TFLite's, NHWC);
    ``names``: tensor id -> name; ``inputs`` / ``outputs``: the graph's tensor ids;
    ``ints``: tensor id -> the integer constants (shapes, axes, paddings, sizes);
    ``const_ids``: the float constants (weights); ``constants``: their values as read
    from the file (not part of :meth:`to_dict`: the weights live in the module's state
    dict).
    """

    ops: list[dict[str, Any]]
    shapes: dict[int, list[int]]
    names: dict[int, str]
    inputs: list[int]
    outputs: list[int]
    ints: dict[int, list] = field(default_factory=dict)
    const_ids: list[int] = field(default_factory=list)
    constants: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "shapes": {str(k): list(v) for k, v in self.shapes.items()},
            "names": {str(k): v for k, v in self.names.items()},
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "ints": {str(k): v for k, v in self.ints.items()},
            "const_ids": list(self.const_ids),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        return cls(
            ops=[dict(o) for o in d["ops"]],
            shapes={int(k): list(v) for k, v in d["shapes"].items()},
            names={int(k): str(v) for k, v in d["names"].items()},
            inputs=[int(i) for i in d["inputs"]],
            outputs=[int(i) for i in d["outputs"]],
            ints={int(k): v for k, v in d["ints"].items()},
            const_ids=[int(i) for i in d["const_ids"]],
        )


# --------------------------------------------------------------------------- reading
def read_tflite(path: str | Path, sha256: str | None = None) -> Program:
    """Parse ``path`` into a :class:`Program`. A missing, truncated or unexpected file
    (``sha256`` given and different) is one :class:`HandsegError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HandsegError(f"{path}: no such model file (run `handseg fetch-hand-models`)")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise HandsegError(
            f"{path}: not the expected model (SHA-256 mismatch; truncated or another file): "
            "run `handseg fetch-hand-models` again"
        )
    try:
        import tflite  # optional dependency (the 'hands' extra)
    except ImportError as exc:
        raise HandsegError(_INSTALL_HINT) from exc
    try:
        return _parse(tflite, data)
    except HandsegError as exc:
        raise HandsegError(f"{path}: {exc}") from None
    except Exception as exc:  # a damaged flatbuffer fails anywhere inside the reader
        raise HandsegError(f"{path}: not a readable TFLite model ({type(exc).__name__})") from None


def _op_names(tflite: Any) -> dict[int, str]:
    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _options(tflite: Any, op: Any, name: str) -> dict[str, Any]:
    table = op.BuiltinOptions()
    cls = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "ADD": tflite.AddOptions,
        "MEAN": tflite.ReducerOptions,
        "FULLY_CONNECTED": tflite.FullyConnectedOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
    }.get(name)
    if cls is None or table is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    if hasattr(o, "FusedActivationFunction"):
        out["activation"] = _ACTIVATIONS.get(o.FusedActivationFunction(), "unsupported")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
        out["same"] = o.Padding() == tflite.Padding.SAME
        out["stride"] = [o.StrideH(), o.StrideW()]
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out["dilation"] = [o.DilationHFactor(), o.DilationWFactor()]
    if name == "MAX_POOL_2D":
        out["kernel"] = [o.FilterHeight(), o.FilterWidth()]
    if name == "MEAN":
        out["keep_dims"] = bool(o.KeepDims())
    if name == "FULLY_CONNECTED":
        out["keep_dims"] = bool(o.KeepNumDims())
    if name == "RESIZE_BILINEAR":
        out["align_corners"] = bool(o.AlignCorners())
        out["half_pixel"] = bool(o.HalfPixelCenters())
    if name == "CONCATENATION":
        out["axis"] = o.Axis()
    if out.get("activation") == "unsupported":
        raise HandsegError(f"{name} has an unsupported fused activation")
    return out


def _parse(tflite: Any, data: bytes) -> Program:
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise HandsegError(f"{model.SubgraphsLength()} subgraphs; one is supported")
    g = model.Subgraphs(0)
    names = _op_names(tflite)
    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
              tflite.TensorType.INT32: np.int32}  # fmt: skip
    shapes, tnames, consts = {}, {}, {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shapes[i] = [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []
        tnames[i] = t.Name().decode("utf-8", "replace")
        buf = model.Buffers(t.Buffer())
        if buf is not None and buf.DataLength() > 0:
            if t.Type() not in dtypes:
                raise HandsegError(f"tensor {tnames[i]} has an unsupported type {t.Type()}")
            raw = buf.DataAsNumpy().tobytes()
            consts[i] = np.frombuffer(raw, dtypes[t.Type()]).reshape(shapes[i])
    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(v) for v in op.OutputsAsNumpy()]
        if name == "DEQUANTIZE":  # float16 weights -> float32, folded away
            if ins[0] not in consts:
                raise HandsegError("DEQUANTIZE of a computed tensor is not supported")
            consts[outs[0]] = consts[ins[0]].astype(np.float32)
            continue
        if name not in SUPPORTED_OPS:
            raise HandsegError(f"operator {name} is not supported ({', '.join(SUPPORTED_OPS)})")
        ops.append({"op": name, "inputs": ins, "outputs": outs,
                    "options": _options(tflite, op, name)})  # fmt: skip
    used = {i for o in ops for i in o["inputs"] if i >= 0}
    floats = {
        i: a.astype(np.float32) for i, a in consts.items() if i in used and a.dtype.kind == "f"
    }
    ints = {i: a.tolist() for i, a in consts.items() if i in used and a.dtype.kind == "i"}
    return Program(
        ops=ops,
        shapes=shapes,
        names=tnames,
        inputs=[int(v) for v in g.InputsAsNumpy()],
        outputs=[int(v) for v in g.OutputsAsNumpy()],
        ints=ints,
        const_ids=sorted(floats),
        constants=floats,
    )


# --------------------------------------------------------------------------- executing
def _act(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if name == "relu_n1_to_1":
        return F.hardtanh(x, -1.0, 1.0)
    return torch.tanh(x)


def _same_pad(x: torch.Tensor, kernel, stride, dilation, value: float = 0.0) -> torch.Tensor:
    """TFLite SAME padding on an NCHW tensor (the extra pixel goes after)."""
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _nhwc_axis(axis: int, ndim: int) -> int:
    """A TFLite (NHWC) axis of a 4-D tensor -> the NCHW axis."""
    axis = axis % ndim
    return (0, 2, 3, 1)[axis] if ndim == 4 else axis


class TFLiteNet(nn.Module):
    """Runs a :class:`Program` in PyTorch. ``forward(x)`` takes (B, 3, H, W) floats as the
    TFLite model takes them (MediaPipe's: RGB in [0, 1]) and returns the graph outputs in
    order; :meth:`run` returns any tensors by id (``stop_after`` ends early, e.g. before
    the landmark heads)."""

    def __init__(self, program: Program | dict[str, Any]) -> None:
        super().__init__()
        self.program = program if isinstance(program, Program) else Program.from_dict(program)
        p = self.program
        self.weights = nn.ParameterDict()
        for i in p.const_ids:  # from the file's values, or zeros to be filled by a state dict
            arr = p.constants.get(i)
            t = torch.zeros(p.shapes[i]) if arr is None else torch.from_numpy(np.array(arr))
            self.weights[str(i)] = nn.Parameter(self._to_torch_layout(i, t.float()))

    def _to_torch_layout(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """Conv filters OHWI -> OIHW; depthwise 1HWC -> C1HW; PReLU alphas -> (C,)."""
        for op in self.program.ops:
            if len(op["inputs"]) > 1 and op["inputs"][1] == i:
                if op["op"] == "CONV_2D":
                    return t.permute(0, 3, 1, 2).contiguous()
                if op["op"] == "DEPTHWISE_CONV_2D":
                    return t.permute(3, 0, 1, 2).contiguous()
                if op["op"] == "PRELU":
                    return t.reshape(-1).contiguous()
        return t

    def _get(self, env: dict[int, torch.Tensor], i: int) -> torch.Tensor:
        return env[i] if i in env else self.weights[str(i)]

    def run(
        self, x: torch.Tensor, want: list[int] | None = None, stop_after: int | None = None
    ) -> dict[int, torch.Tensor]:
        """Execute the ops; returns {tensor id: value} for ``want`` (default: the outputs).
        ``stop_after``: index into ``program.ops`` of the last op to run."""
        p = self.program
        want = list(p.outputs if want is None else want)
        env: dict[int, torch.Tensor] = {p.inputs[0]: x}
        last = len(p.ops) - 1 if stop_after is None else stop_after
        for op in p.ops[: last + 1]:
            env[op["outputs"][0]] = self._exec(op, env)
        return {i: env[i] for i in want}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.run(x)
        return [out[i] for i in self.program.outputs]

    def _exec(self, op: dict[str, Any], env: dict[int, torch.Tensor]) -> torch.Tensor:
        name, ins, o = op["op"], op["inputs"], op["options"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w = env[ins[0]], self.weights[str(ins[1])]
            b = self.weights[str(ins[2])] if len(ins) > 2 and ins[2] >= 0 else None
            groups = 1 if name == "CONV_2D" else x.shape[1]
            if o["same"]:
                x = _same_pad(x, w.shape[2:], o["stride"], o["dilation"])
            y = F.conv2d(x, w, b, stride=o["stride"], dilation=o["dilation"], groups=groups)
            return _act(y, o["activation"])
        if name == "ADD":
            return _act(self._get(env, ins[0]) + self._get(env, ins[1]), o.get("activation"))
        if name == "LOGISTIC":
            return torch.sigmoid(env[ins[0]])
        if name == "PRELU":
            return F.prelu(env[ins[0]], self.weights[str(ins[1])])
        if name == "MEAN":
            x = env[ins[0]]
            axes = [_nhwc_axis(a, x.ndim) for a in np.ravel(self.program.ints[ins[1]]).tolist()]
            return x.mean(dim=axes, keepdim=o["keep_dims"])
        if name == "FULLY_CONNECTED":
            x = env[ins[0]]
            if x.ndim == 4:  # TFLite flattens NHWC
                x = x.permute(0, 2, 3, 1)
            x = x.reshape(x.shape[0], -1)
            b = self.weights[str(ins[2])] if len(ins) > 2 and ins[2] >= 0 else None
            return _act(F.linear(x, self.weights[str(ins[1])], b), o["activation"])
        if name == "PAD":  # paddings [[N], [H], [W], [C]] (before, after) in NHWC
            (_, _), (pt, pb), (pl, pr), (pc, pd) = self.program.ints[ins[1]]
            return F.pad(env[ins[0]], (pl, pr, pt, pb, pc, pd))
        if name == "MAX_POOL_2D":
            x = env[ins[0]]
            if o["same"]:
                x = _same_pad(x, o["kernel"], o["stride"], (1, 1), value=float("-inf"))
            return _act(F.max_pool2d(x, o["kernel"], o["stride"]), o["activation"])
        if name == "RESIZE_BILINEAR":
            size = [int(v) for v in self.program.ints[ins[1]]]
            if o["align_corners"]:
                return F.interpolate(env[ins[0]], size=size, mode="bilinear", align_corners=True)
            if not o["half_pixel"]:  # TF's legacy mapping: src = dst * in / out
                return _legacy_resize(env[ins[0]], size)
            return F.interpolate(env[ins[0]], size=size, mode="bilinear", align_corners=False)
        if name == "RESHAPE":
            x = env[ins[0]]
            if x.ndim == 4:
                x = x.permute(0, 2, 3, 1)
            shape = self.program.shapes[op["outputs"][0]]
            y = x.reshape([x.shape[0], *shape[1:]])
            return y.permute(0, 3, 1, 2) if y.ndim == 4 else y
        if name == "CONCATENATION":
            xs = [self._get(env, i) for i in ins]
            return _act(torch.cat(xs, dim=_nhwc_axis(o["axis"], xs[0].ndim)), o["activation"])
        raise HandsegError(f"operator {name} is not supported")


def _legacy_resize(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """TFLite RESIZE_BILINEAR with neither align_corners nor half_pixel_centers."""
    h, w = x.shape[2:]
    oh, ow = size
    ys = torch.arange(oh, dtype=x.dtype) * (h / oh)
    xs = torch.arange(ow, dtype=x.dtype) * (w / ow)
    y0 = ys.floor().long().clamp(max=h - 1)
    x0 = xs.floor().long().clamp(max=w - 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    fy, fx = (ys - y0).view(1, 1, -1, 1), (xs - x0).view(1, 1, 1, -1)
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bot = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy) + bot * fy


def feature_taps(program: Program) -> list[tuple[int, int, int]]:
    """The encoder's multi-scale features: for each spatial size of the 4-D activations,
    the last tensor of that size, as (op index, tensor id, channels), finest first.
    Ops after the last 4-D activation (pooling to a vector, heads) are not features."""
    taps: dict[int, tuple[int, int, int]] = {}
    for k, op in enumerate(program.ops):
        out = op["outputs"][0]
        shape = program.shapes[out]
        if len(shape) != 4 or op["op"] in ("MEAN", "RESHAPE"):
            continue
        taps[shape[1]] = (k, out, shape[3])
    return [taps[s] for s in sorted(taps, reverse=True)]
