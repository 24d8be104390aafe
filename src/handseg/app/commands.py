"""The work behind ``handseg evaluate``, ``predict`` and ``compare``: one function each.

Each joins library calls of several stages (a model file, a run folder, folders of photos)
into what the command promises, checks that the arguments make sense together and returns
what the command prints, so that a test can call it without the command line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from handseg.core.errors import HandsegError
from handseg.core.outputs import clip_files
from handseg.core.rundir import RunDir
from handseg.data.pairs import find_pairs
from handseg.eval.clips import evaluate_clip, is_clip
from handseg.eval.evaluate import (
    compare,
    evaluate_mask_folders,
    evaluate_model,
    evaluate_split,
    write_evaluation,
)
from handseg.infer.clips import predict_clip
from handseg.infer.collection import launch, predict_collection
from handseg.infer.media import predict_inputs
from handseg.infer.pipeline import load_scorer, load_segmenter
from handseg.infer.predictor import Predictor

__all__ = ["run_compare", "run_evaluate", "run_hand_value", "run_predict"]


log = logging.getLogger(__name__)


def run_hand_value(run: str | Path) -> str | None:
    """The hand value a training run was configured with (None when unset or unknown)."""
    return RunDir(run).hand_value()


def run_evaluate(
    *,
    model: str | Path | None = None,
    pred_masks: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    split: str | None = None,
    run: str | Path | None = None,
    hand_value: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    clip: bool = False,
    **runtime: Any,
) -> tuple[dict[str, Any], dict[str, Path] | None]:
    """``handseg evaluate``: score a model (on folders or a subset of a run's split) or
    another tool's masks; with ``out`` also write the result files. A clip (``clip``, or a
    video among ``images`` / ``pred_masks`` / ``masks``) is scored frame by frame with the
    temporal stability figure (:func:`handseg.eval.clips.evaluate_clip`).

    ``runtime`` goes to :func:`load_model` (runtime, precision, threads, scale). Returns the
    metrics and the files written (None without ``out``).
    """
    if model and pred_masks:
        raise HandsegError("pass either --model (to predict) or --pred-masks (to score), not both")
    if clip or any(is_clip(p) for p in (images, pred_masks, masks) if p):
        if not masks or not (pred_masks or images):
            raise HandsegError("a clip needs --masks (the ground-truth mask clip) and --images "
                               "CLIP (with --model, or none for the built-in detector) or "
                               "--pred-masks MASK_CLIP")  # fmt: skip
        predictor = None
        if not pred_masks:
            predictor = load_segmenter(model, device=device, **runtime) if model else (
                load_segmenter(None, detector="mediapipe", **runtime))  # fmt: skip
        result = evaluate_clip(gt=masks, clip=images, predictor=predictor, pred=pred_masks,
                               hand_value=hand_value)  # fmt: skip
        return result, (write_evaluation(result, out) if out else None)
    if pred_masks:
        if not masks:
            raise HandsegError("--pred-masks needs --masks DIR, the ground-truth masks")
        if images or split or run:
            raise HandsegError("--images, --split and --run go with --model, not --pred-masks")
        result = evaluate_mask_folders(pred_masks, masks, hand_value=hand_value)
    else:
        result = _evaluate_model(
            model, RunDir(run) if run else None, split, images, masks, hand_value,
            load_options={"device": device, **runtime},
        )  # fmt: skip
    written = write_evaluation(result, out) if out else None
    return result, written


def _evaluate_model(
    model: str | Path | None,
    run: RunDir | None,
    split: str | None,
    images: str | Path | None,
    masks: str | Path | None,
    hand_value: str | None,
    load_options: dict[str, Any],
) -> dict[str, Any]:
    """The ``--model`` half of :func:`run_evaluate`."""
    model = model or (run.model if run else None)
    if not model:
        raise HandsegError(
            "say what to evaluate: --model RUN/model.pt with --images DIR --masks DIR "
            "(or --split test --run RUN), or --pred-masks DIR --masks DIR"
        )
    if split and run is None:
        run = RunDir(Path(model).parent)  # the model's own run folder
        if not run.split.is_file():
            raise HandsegError(f"--split {split} needs --run RUN, the run with split.json")
    if hand_value is None and run is not None:
        hand_value = run.hand_value()
    predictor = load_scorer(model, **load_options)
    if split:
        return evaluate_split(
            predictor, run.split, split, images_dir=images, masks_dir=masks,
            hand_value=hand_value,
        )  # fmt: skip
    if not (images and masks):
        raise HandsegError("--model needs --images DIR and --masks DIR, or --split NAME --run RUN")
    return evaluate_model(predictor, find_pairs(images, masks), hand_value=hand_value)


def run_predict(
    model: str | Path | None,
    inputs: list[str],
    out: str | Path,
    *,
    batch_size: int = 4,
    overlay: bool = True,
    camera: int | None = None,
    show: bool = False,
    max_frames: int | None = None,
    device: str = "auto",
    detector: str | None = None,
    refine: str | None = None,
    detector_mode: str | None = None,
    instances: bool = False,
    collection: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    skip_existing: bool = False,
    lists: list[str] | None = None,
    workers: int | None = None,
    clip: bool = False,
    mask_video: bool = False,
    fps: float | None = None,
    smooth: bool = True,
    smooth_masks: bool = False,
    **runtime: Any,
) -> dict[str, Any]:
    """``handseg predict``: masks (and overlays) of image and video ``inputs``, and of a
    live camera first when ``camera`` is given. Videos (and with ``clip`` folders of
    frames) and the camera get a clip's per-frame outputs, hands tracked
    (:func:`handseg.infer.clips.predict_clip`; ``mask_video``, ``fps``, ``smooth``,
    ``smooth_masks``). The model's recorded pipeline runs unless
    ``detector`` / ``refine`` / ``detector_mode`` say otherwise
    (:func:`handseg.infer.pipeline.load_segmenter`); ``instances`` also writes one mask per
    hand and ``<name>_hands.json``.

    ``collection`` (implied by ``devices``/``num_nodes`` > 1, ``skip_existing``, ``lists``
    or ``workers``) predicts a whole collection instead
    (:func:`handseg.infer.collection.predict_collection`): many processes, resumable,
    ``OUT/manifest.csv``.

    Returns ``{"camera": predict_video's result or None, "records": one per input,
    "detector_mode": the hand detector's mode, None without one}`` (and
    ``"collection"``: predict_collection's result in collection mode); raises
    :class:`HandsegError` when there are inputs and none could be read.
    """
    if batch_size < 1:
        raise HandsegError(f"--batch-size must be at least 1, got {batch_size}")
    clip_options = {"mask_video": mask_video, "fps": fps, "smooth": smooth,
                    "smooth_masks": smooth_masks}  # fmt: skip
    if collection or devices * num_nodes > 1 or skip_existing or lists or workers is not None:
        _check_collection_inputs(camera, clip)
        return _predict_collection(
            model, inputs, out, lists=lists or [], batch_size=batch_size, overlay=overlay,
            devices=devices, num_nodes=num_nodes, skip_existing=skip_existing,
            workers=workers, instances=instances, device=device, clip_options=clip_options,
            segmenter={"detector": detector, "refine": refine, "mode": detector_mode, **runtime},
        )  # fmt: skip
    if not inputs and camera is None:
        raise HandsegError("give at least one INPUT (file, folder, glob or video) or --camera N")
    predictor = load_segmenter(
        model, detector=detector, refine=refine, mode=detector_mode, device=device, **runtime
    )
    if model is not None or detector is not None:
        log.info("predicting with %s", getattr(predictor, "description", "the whole-image network"))
    live = None
    if camera is not None:
        live = _predict_camera(predictor, camera, Path(out), show, max_frames, instances,
                               clip_options)  # fmt: skip
    records = []
    if inputs:
        records = predict_inputs(predictor, inputs, out, batch_size=batch_size, overlay=overlay,
                                 instances=instances, clip=clip, max_frames=max_frames,
                                 **clip_options)  # fmt: skip
    if inputs and not any(r["ok"] for r in records):
        raise HandsegError(f"none of the {len(records)} input(s) could be read; see the warnings")
    hand_pipeline = getattr(predictor, "pipeline", None)  # a HandSegmenter: the detector's
    return {"camera": live, "records": records,
            "detector_mode": getattr(hand_pipeline, "mode", None)}  # fmt: skip


def _check_collection_inputs(camera: int | None, clip: bool) -> None:
    if camera is not None or clip:
        raise HandsegError(f"{'--camera' if camera is not None else '--clip'} does not go "
                           "with the collection options (collections take videos as "
                           "clips and folders as photos)")  # fmt: skip


def _predict_collection(
    model: str | Path | None,
    inputs: list[str],
    out: str | Path,
    *,
    lists: list[str],
    devices: int,
    num_nodes: int,
    workers: int | None,
    device: str,
    segmenter: dict[str, Any],
    **options: Any,
) -> dict[str, Any]:
    """The collection half of :func:`run_predict`: start the processes, load the model in
    each (on its own GPU; CPU threads shared out), predict its share, merge the manifest."""
    if not inputs and not lists:
        raise HandsegError("give at least one INPUT (folder, file or glob) or --list FILE")
    dist = launch(devices, num_nodes, device)
    cpus = os.cpu_count() or 1
    if str(dist.device).startswith("cpu") and segmenter.get("threads") is None:
        segmenter["threads"] = max(1, cpus // dist.local_world_size)
    if workers is None:
        workers = min(4, max(1, cpus // dist.local_world_size))
    predictor = load_segmenter(model, device=dist.device or device, **segmenter)
    if dist.rank == 0:
        log.info("predicting with %s", getattr(predictor, "description", "the whole-image network"))
    result = predict_collection(
        predictor, inputs, out, lists=lists, workers=workers, dist=dist, **options
    )
    counts = result["counts"]
    if counts is not None and not counts.get("ok") and not counts.get("existing"):
        raise HandsegError(
            f"none of the {sum(counts.values())} input(s) could be read; see {result['manifest']}"
        )
    return {"camera": None, "records": [], "collection": result}


def _predict_camera(
    predictor: Predictor, camera: int, out: Path, show: bool, max_frames: int | None,
    instances: bool, clip_options: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Segment camera ``camera`` live as a clip (hands tracked) into ``out/camera<N>_*``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"camera{camera}"
    info = predict_clip(predictor, camera, out, stem, show=show, max_frames=max_frames,
                        instances=instances, **clip_options)  # fmt: skip
    if not info["ok"]:
        raise HandsegError(f"could not read any frame from camera {camera}")
    return info | {"output": clip_files(out, stem).overlay}


def run_compare(
    model: str | Path,
    image: str | Path,
    mask: str | Path,
    out: str | Path,
    *,
    split_errors: bool = False,
    hand_value: str | None = None,
    device: str = "auto",
    **runtime: Any,
) -> dict[str, Any]:
    """``handseg compare``: the seed's test figure for one photo; returns the scores."""
    predictor = load_scorer(model, device=device, **runtime)
    return compare(predictor, image, mask, out, split_errors=split_errors, hand_value=hand_value)
