"""Videos in a collection (:mod:`handseg.infer.collection`): one clip, one manifest row.

A video of a collection is predicted whole by the process its block belongs to
(:func:`handseg.infer.clips.predict_clip`: frames in order, hands tracked), in that
process itself rather than in a decoding worker, since its frames depend on each other.
It is complete when its ``<stem>_clip.json`` exists (written last), so ``--skip-existing``
does not redo a finished clip and redoes a clip that a killed run left half-written.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from handseg.core.errors import HandsegError
from handseg.core.outputs import clip_files
from handseg.infer.clips import predict_clip

__all__ = ["clip_row"]

log = logging.getLogger(__name__)


def _row(writer: Any, path: str, summary: dict[str, Any], status: str, ms: float | None):
    files = clip_files(writer.out, Path(summary["stem"]).as_posix(),
                       mask_video=bool(writer.clip_options.get("mask_video")))  # fmt: skip
    outputs = summary.get("outputs", {})
    rel = lambda p: p.relative_to(writer.out).as_posix()  # noqa: E731
    h, w = summary.get("size") or ("", "")
    return {
        "input": path, "status": status, "mask": rel(files.masks),
        "overlay": rel(files.overlay) if "overlay" in outputs else "",
        "instances": rel(files.pose) if "pose" in outputs else "",
        "height": h, "width": w, "hand_share": f"{summary.get('hand_share', 0.0):.6f}",
        "hands": summary.get("frames_with_hands", ""), "runtime": writer.runtime,
        "ms": "" if ms is None else f"{ms:.1f}", "frames": summary.get("frames", 0),
    }  # fmt: skip


def clip_row(writer: Any, loaded: Any) -> int:
    """Predict (or, when complete, only record) one video of a collection and put its
    manifest row; returns 1 for an error, else 0. ``writer`` is the collection's block
    writer (out, part, predictor, overlay, instances, clip_options, runtime)."""
    item = loaded.item
    files = clip_files(writer.out, item.stem,
                       mask_video=bool(writer.clip_options.get("mask_video")))  # fmt: skip
    if loaded.done:

        def make() -> dict[str, Any]:
            summary = json.loads(files.summary.read_text(encoding="utf-8"))
            if not summary.get("good_frames"):
                return {"input": item.path, "status": "error", "runtime": writer.runtime,
                        "error": f"no frame of {item.path} could be read"}  # fmt: skip
            return _row(writer, item.path, summary | {"stem": item.stem}, "existing", None)

        writer.part.put(item, make, keep=lambda old: old["status"] in ("ok", "existing"))
        return 0
    start = time.perf_counter()
    try:
        info = predict_clip(writer.predictor, item.path, writer.out, item.stem,
                            instances=writer.instances, overlay=writer.overlay,
                            progress=False, **writer.clip_options)  # fmt: skip
        error = "" if info["ok"] else info["error"]
    except HandsegError as exc:
        info, error = {}, str(exc)
    except Exception as exc:  # a decoder bug must not end a long run
        info, error = {}, f"cannot predict {item.path}: {type(exc).__name__}: {exc}"
    ms = 1000 * (time.perf_counter() - start)
    if error:
        log.warning("skipped: %s", error)
        row = {"input": item.path, "status": "error", "error": error,
               "runtime": writer.runtime, "ms": f"{ms:.1f}"}  # fmt: skip
        writer.part.put(item, lambda: row, keep=lambda old: old["status"] == "error")
        return 1
    row = _row(writer, item.path, info | {"stem": item.stem}, "ok", ms)
    writer.part.put(item, lambda: row, keep=lambda old: False)
    return 0
