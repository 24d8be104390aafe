"""The exported ONNX file: its metadata (the model card), reading it, an onnxruntime session.

``metadata_props`` of a handseg ONNX file: ``handseg.format`` (``"handseg-onnx"``),
``handseg.format_version``, ``handseg.version``, ``handseg.precision`` (``fp32``/``int8``),
``handseg.classes``, ``handseg.normalization``, ``handseg.input_size`` (JSON each, for
readers without handseg) and ``handseg.meta``: the whole
:class:`~handseg.model.card.ModelCard` as JSON, in ``model.pt``'s layout.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handseg.core.constants import __version__
from handseg.core.errors import HandsegError
from handseg.model.card import ModelCard

ONNX_FORMAT = "handseg-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OnnxModel:
    """A handseg network stored as an ONNX file (what :func:`read_onnx_file` returns in
    place of a ``torch.nn.Module``). ``precision`` is ``"fp32"`` or ``"int8"``."""

    path: Path
    precision: str = "fp32"


def meta_props(card: ModelCard, precision: str) -> dict[str, str]:
    """The ``metadata_props`` entries that describe ``card`` (module docstring)."""
    layout = card.to_dict()
    return {
        "handseg.format": ONNX_FORMAT,
        "handseg.format_version": str(ONNX_FORMAT_VERSION),
        "handseg.version": __version__,
        "handseg.precision": precision,
        "handseg.classes": json.dumps(layout["classes"]),
        "handseg.normalization": json.dumps(layout["normalization"]),
        "handseg.input_size": json.dumps(layout["input_size"]),
        "handseg.meta": json.dumps(layout, default=str),
    }


def set_metadata(proto: Any, card: ModelCard, precision: str = "fp32") -> None:
    """Write ``card`` into an ``onnx.ModelProto`` (replacing any earlier handseg metadata)."""
    props = meta_props(card, precision)
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "handseg"
    proto.producer_version = __version__
    proto.doc_string = (
        f"handseg hand segmentation network. Input '{INPUT_NAME}' (B, 3, H, W) float32, "
        "normalised with handseg.normalization; output "
        f"'{OUTPUT_NAME}' (B, C, H, W) float32 over handseg.classes."
    )


def onnx_metadata(proto: Any, path: str | Path) -> tuple[ModelCard, str]:
    """(card, precision) from a ModelProto written by handseg; HandsegError otherwise.

    The separate ``handseg.classes``, ``handseg.normalization`` and ``handseg.input_size``
    entries win over the same keys inside ``handseg.meta``."""
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("handseg.format") != ONNX_FORMAT:
        raise HandsegError(
            f"{path} is an ONNX model but not one exported by handseg (no handseg metadata); "
            "export the model.pt with 'handseg export --model RUN/model.pt --out model.onnx'"
        )
    try:
        layout = json.loads(props.get("handseg.meta", "{}"))
        layout["classes"] = json.loads(props["handseg.classes"])
        layout["normalization"] = json.loads(props["handseg.normalization"])
        layout["input_size"] = json.loads(props["handseg.input_size"])
        card = ModelCard.from_dict(layout)
    except (KeyError, TypeError, json.JSONDecodeError, HandsegError) as exc:
        raise HandsegError(
            f"{path}: the handseg metadata is damaged ({exc}); export the model again"
        ) from None
    return card, props.get("handseg.precision", "fp32")


def save_proto(proto: Any, path: Path) -> Path:
    """Serialise to a temporary file next to ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a model file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_onnx_file(path: str | Path) -> tuple[OnnxModel, ModelCard]:
    """Open an ONNX file written by ``handseg export`` -> (OnnxModel, its model card).

    A file that is not ONNX, or an ONNX model without handseg metadata, raises
    :class:`HandsegError`.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise HandsegError(f"model file {path} does not exist (pass a model.onnx or RUN/model.pt)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: not a protobuf at all
        raise HandsegError(
            f"{path} is not an ONNX model (cannot parse it: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "pass a file written by 'handseg export' or a model.pt"
        ) from None
    if not len(proto.graph.node):
        raise HandsegError(
            f"{path} is not an ONNX model (it holds no graph); pass a file written by "
            "'handseg export' or a model.pt"
        )
    card, precision = onnx_metadata(proto, path)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if INPUT_NAME not in names_in or OUTPUT_NAME not in names_out:
        raise HandsegError(
            f"{path}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', found "
            f"{names_in} -> {names_out}; export the model again with 'handseg export'"
        )
    return OnnxModel(path=path, precision=precision), card


def ort_session(source: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: all graph optimisations, sequential execution,
    ``threads`` intra-op threads (None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    src = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
