"""Prediction over whole collections: many processes, resumable, with a manifest.

``handseg predict --devices N --num-nodes M`` (and the other options of its "collections"
group) runs :func:`predict_collection` in every process:

- **Streaming inputs.** :func:`iter_inputs` lists folders (recursively, with
  ``os.scandir``), glob patterns, files and text files of paths lazily, as a generator;
  nothing holds the whole list. Inputs are cut into *blocks* of ``batch_size`` consecutive
  inputs; block ``k`` belongs to process ``k mod world_size`` and, inside it, to DataLoader
  worker ``(k // world_size) mod workers``, which decodes its images. No length is needed.
- **Identical masks.** A block is always one network batch (split only where the images'
  working sizes differ), so which images share a batch depends on the input order and
  ``batch_size`` only: never on the number of processes, workers, or on restarts.
- **Resumable.** Outputs are written atomically (:mod:`handseg.core.io`), so a file that
  exists is complete. With ``skip_existing`` an input whose outputs all exist is not
  written again; a block with some outputs missing is recomputed whole (same batch, same
  masks) and only the missing files are written.
- **Manifest.** Each process appends one row per input of its blocks, in order, to
  ``OUT/.manifest-parts/rank<r>.csv`` (flushed after every block); rank 0 merges the parts
  into ``OUT/manifest.csv`` (in input order, written atomically) when all are done (an
  earlier one is removed at the start, so a manifest always describes a finished run). On a
  restart a process keeps the rows its part already holds for the same inputs (with their
  timings) and cuts the part where it starts writing new ones, so no row is ever written
  twice, whenever the run was killed. Bad inputs get a row with the error and are skipped.

:func:`launch` starts the processes through Lightning Fabric (local spawn, torchrun and
SLURM environments; gloo for the one barrier, so CPU and GPU runs alike).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from handseg.core.constants import IMAGE_EXTS, VIDEO_EXTS
from handseg.core.errors import HandsegError
from handseg.core.imaging import read_image
from handseg.core.io import atomic_save_image, atomic_write
from handseg.core.outputs import MANIFEST, clip_files, hands_file, mask_file, overlay_file
from handseg.core.viz import overlay as overlay_image
from handseg.core.viz import save_mask_png
from handseg.infer.clip_collection import clip_row

__all__ = [
    "MANIFEST_COLUMNS",
    "Distributed",
    "Item",
    "iter_inputs",
    "launch",
    "merge_manifest",
    "output_paths",
    "predict_collection",
]

log = logging.getLogger(__name__)

_MEDIA_EXTS = IMAGE_EXTS + VIDEO_EXTS

PARTS = ".manifest-parts"
MANIFEST_COLUMNS = (
    "input", "status", "mask", "overlay", "instances", "height", "width", "hand_share",
    "hands", "runtime", "ms", "error", "frames",
)  # fmt: skip
"""``status``: ``ok`` (predicted in this run), ``existing`` (its outputs were complete from
an earlier run, ``--skip-existing``), ``error`` (see ``error``; no outputs). Output paths
are relative to OUT; ``hand_share`` is the hand pixels' fraction; ``hands`` the number of
hands found (hand detector only); ``ms`` the milliseconds spent on the input (decoding,
network share of its batch, writing). A video is one row (one clip, hands tracked,
:func:`handseg.infer.clips.predict_clip`): ``mask`` its masks (folder or ``.mkv``),
``overlay`` its overlay video, ``instances`` its ``.pose`` file, ``hand_share`` the mean
over its frames, ``hands`` the frames with a hand, ``frames`` its frames (empty for
photos); it is complete when its ``<stem>_clip.json`` exists."""


# --- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One input: its path as listed and its outputs' stem relative to OUT (``sub/name``)."""

    path: str
    stem: str


def _walk(folder: str) -> Iterator[str]:
    """Image files under ``folder``, recursively, in the file system's order (no hidden
    entries, no links to folders: a folder linking to itself would never end)."""
    try:
        entries = os.scandir(folder)
    except OSError as exc:
        log.warning("cannot list folder %s: %s", folder, exc.strerror or exc)
        return
    with entries:
        subfolders = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    subfolders.append(e.path)  # one folder's sub-folders, not its files
                elif e.is_file() and os.path.splitext(e.name)[1].lower() in _MEDIA_EXTS:
                    yield e.path
            except OSError:
                continue
    for sub in subfolders:
        yield from _walk(sub)


def _stem(rel: str | PurePath) -> str:
    """Output stem for a relative input path: no anchor, no ``..``, no extension."""
    parts = [p for p in PurePath(rel).parts if p not in ("..", ".")]
    if parts and PurePath(rel).anchor and parts[0] == PurePath(rel).anchor:
        parts = parts[1:]
    if not parts:
        return "_"
    return PurePath(*parts[:-1], os.path.splitext(parts[-1])[0]).as_posix()


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    k = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    return Path(*parts[:k]) if k else Path(".")


def iter_inputs(inputs: Sequence[str | Path], lists: Sequence[str | Path] = ()) -> Iterator[Item]:
    """The collection's inputs, lazily, in a fixed order (see the module docstring).

    A folder gives its images recursively (outputs mirror its sub-folders); a glob pattern
    its matching files (relative to the pattern's fixed part); a file itself, whatever its
    extension; each line of a file in ``lists`` one path (blank lines and ``#`` comments
    skipped; outputs mirror the path as written, without its root and ``..``).
    """
    for raw in inputs:
        text = str(raw)
        if os.path.isdir(text):
            for path in _walk(text):
                yield Item(path, _stem(os.path.relpath(path, text)))
        elif os.path.isfile(text) or not any(c in text for c in "*?["):
            yield Item(text, _stem(Path(text).name))  # a missing file gets an error row
        else:
            root = _glob_root(text)
            rest = str(Path(text).relative_to(root)) if root != Path(".") else text
            for p in root.glob(rest):
                if p.is_file() and not p.name.startswith("."):
                    yield Item(str(p), _stem(p.relative_to(root)))
    for listing in lists:
        try:
            f = open(listing, encoding="utf-8")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise HandsegError(f"cannot read list {listing}: {exc.strerror or exc}") from None
        with f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield Item(line, _stem(line))


def count_inputs(inputs: Sequence[str | Path], lists: Sequence[str | Path] = ()) -> int:
    """How many inputs :func:`iter_inputs` gives (one more lazy pass; for progress bars)."""
    return sum(1 for _ in iter_inputs(inputs, lists))


def output_paths(out: Path, stem: str, *, overlay: bool, instances: bool) -> dict[str, Path]:
    """The files one input gets: ``mask`` always, ``overlay`` and ``instances`` (the
    hands JSON, written after the per-hand masks) when asked for."""
    paths = {"mask": mask_file(out, stem)}
    if overlay:
        paths["overlay"] = overlay_file(out, stem)
    if instances:
        paths["instances"] = hands_file(out, stem)
    return paths


# --- loading (DataLoader workers) --------------------------------------------------------------
@dataclass
class Loaded:
    """One input of a block as a worker hands it over."""

    item: Item
    done: bool  # all outputs exist (skip_existing)
    image: np.ndarray | None = None
    error: str = ""
    ms: float = 0.0  # decoding time
    clip: bool = False  # a video: predicted whole, in the main process (predict_clip)


def _load(item: Item) -> Loaded:
    start = time.perf_counter()
    loaded = Loaded(item, done=False)
    if _is_clip(item):
        loaded.clip = True  # read in the main process: its frames are tracked in order
    else:
        try:
            loaded.image = read_image(item.path)
        except HandsegError as exc:
            loaded.error = str(exc)
        except Exception as exc:  # a decoder bug must not end a long run
            loaded.error = f"cannot read {item.path}: {type(exc).__name__}: {exc}"
    loaded.ms = 1000 * (time.perf_counter() - start)
    return loaded


def _is_clip(item: Item) -> bool:
    return os.path.splitext(item.path)[1].lower() in VIDEO_EXTS


def blocks(items: Iterable[Item], size: int) -> Iterator[tuple[int, list[Item]]]:
    """``(k, items k*size ... (k+1)*size - 1)`` for a stream of items."""
    block: list[Item] = []
    k = 0
    for item in items:
        block.append(item)
        if len(block) == size:
            yield k, block
            block, k = [], k + 1
    if block:
        yield k, block


class CollectionDataset(IterableDataset):
    """The blocks of one process (``rank`` of ``world_size``), decoded by the DataLoader
    worker they belong to; each element is ``(k, [Loaded, ...])``. A block whose inputs
    are all complete (``skip_existing``) comes without images."""

    def __init__(
        self, inputs: Sequence[str], lists: Sequence[str], out: Path, *, rank: int,
        world_size: int, batch_size: int, skip_existing: bool, overlay: bool, instances: bool,
    ) -> None:  # fmt: skip
        self.inputs, self.lists, self.out = list(inputs), list(lists), out
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.skip_existing, self.overlay, self.instances = skip_existing, overlay, instances

    def __iter__(self) -> Iterator[tuple[int, list[Loaded]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for k, block in blocks(iter_inputs(self.inputs, self.lists), self.batch_size):
            if k % self.world_size != self.rank or (k // self.world_size) % workers != worker:
                continue
            done = [self._complete(item) for item in block]
            if all(done):
                yield k, [Loaded(item, done=True, clip=_is_clip(item)) for item in block]
                continue
            loaded = [_load(item) for item in block]
            for ld, d in zip(loaded, done):
                ld.done = d
            yield k, loaded

    def _complete(self, item: Item) -> bool:
        if not self.skip_existing:
            return False
        if _is_clip(item):
            return clip_files(self.out, item.stem).summary.is_file()
        paths = output_paths(self.out, item.stem, overlay=self.overlay, instances=self.instances)
        return all(p.is_file() for p in paths.values())


def _as_is(x: Any) -> Any:
    return x


# --- the manifest --------------------------------------------------------------------------
def _line(row: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in MANIFEST_COLUMNS])
    return buf.getvalue().encode("utf-8")


def _parse(line: bytes) -> dict[str, str] | None:
    if not line.endswith(b"\n"):
        return None  # the half-written last line of a killed run
    try:
        values = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    return dict(zip(MANIFEST_COLUMNS, values)) if len(values) == len(MANIFEST_COLUMNS) else None


class ManifestPart:
    """One process's rows, appended in its block order to ``OUT/.manifest-parts/rank<r>.csv``.

    ``resume``: the part of an earlier run is read along: :meth:`put` keeps an old row for
    the same input when ``keep(old_row)`` says so, and otherwise cuts the file there and
    appends from then on, so every input has exactly one row.
    """

    def __init__(self, path: Path, *, resume: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.reading = resume and path.is_file()
        self.f: IO[bytes] = open(path, "r+b" if self.reading else "wb")  # noqa: SIM115

    def put(self, item: Item, make: Callable[[], dict[str, Any]], keep: Callable[[dict], bool]):
        if self.reading:
            pos = self.f.tell()
            old = _parse(self.f.readline())
            if old is not None and old["input"] == item.path and keep(old):
                return
            self.f.seek(pos)
            self.f.truncate()
            self.reading = False
        self.f.write(_line(make()))

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if self.reading:  # fewer inputs than last time: drop the rows after the last kept
            self.f.truncate()
        self.f.close()


def merge_manifest(out: Path, world_size: int, batch_size: int) -> dict[str, int]:
    """Rank 0, after every process finished: ``OUT/manifest.csv`` from the parts, in input
    order (block k's rows are in part k mod world_size), streamed and written atomically.
    Returns the count of rows per status."""
    counts: dict[str, int] = {}
    parts = [open(out / PARTS / f"rank{r}.csv", newline="", encoding="utf-8")  # noqa: SIM115
             for r in range(world_size)]  # fmt: skip
    try:
        readers = [csv.reader(f) for f in parts]
        with atomic_write(out / MANIFEST, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            live = True
            while live:
                live = False
                for reader in readers:
                    for _ in range(batch_size):
                        row = next(reader, None)
                        if row is None:
                            break
                        live = True
                        writer.writerow(row)
                        status = row[1]
                        counts[status] = counts.get(status, 0) + 1
    finally:
        for f in parts:
            f.close()
    for stale in (out / PARTS).glob("rank*.csv"):  # from an earlier run with more processes
        if stale.stem[4:].isdigit() and int(stale.stem[4:]) >= world_size:
            stale.unlink(missing_ok=True)
    return counts


# --- predicting ----------------------------------------------------------------------------
@dataclass
class Distributed:
    """Where this process stands: ``rank`` of ``world_size`` (``local_world_size`` on its
    machine), the torch ``device`` it predicts on and a ``barrier`` across all of them."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: str | None = None
    barrier: Callable[[], None] = field(default=lambda: None)


def launch(devices: int = 1, num_nodes: int = 1, device: str = "auto") -> Distributed:
    """Start ``devices`` processes per machine on ``num_nodes`` machines (Lightning Fabric,
    DDP: spawns locally, or joins the processes torchrun / SLURM's srun started) and
    return this process's :class:`Distributed`. One process in all starts nothing."""
    if devices < 1 or num_nodes < 1:
        raise HandsegError(
            f"--devices and --num-nodes must be at least 1, got {devices}, {num_nodes}"
        )
    if devices * num_nodes == 1:
        return Distributed(device=device)
    from lightning.fabric import Fabric  # heavy; only multi-process runs need it
    from lightning.fabric.strategies import DDPStrategy

    from handseg.core.device import accelerator

    # gloo serves the one collective (the final barrier) on CPU and GPU alike; the long
    # timeout lets one process wait for a slower one on a big collection
    strategy = DDPStrategy(process_group_backend="gloo", timeout=timedelta(days=7))
    fabric = Fabric(
        accelerator=accelerator(device), devices=devices, num_nodes=num_nodes, strategy=strategy
    )
    fabric.launch()
    return Distributed(
        rank=fabric.global_rank, world_size=fabric.world_size, local_world_size=devices,
        device=str(fabric.device), barrier=fabric.barrier,
    )  # fmt: skip


def _rank_share(n: int, batch_size: int, rank: int, world_size: int) -> int:
    """How many of ``n`` inputs the blocks of ``rank`` hold."""
    n_blocks = -(-n // batch_size)
    return sum(min(batch_size, n - k * batch_size) for k in range(rank, n_blocks, world_size))


def _hand_share(mask: np.ndarray) -> str:
    return f"{float((mask > 0).mean()):.6f}"


class _Writer:
    """Runs the network on a block and writes its outputs and manifest rows."""

    def __init__(
        self, predictor: Any, out: Path, part: ManifestPart, *, batch_size: int,
        overlay: bool, instances: bool, clip_options: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.predictor, self.out, self.part = predictor, out, part
        self.clip_options = clip_options or {}
        self.batch_size, self.overlay, self.instances = batch_size, overlay, instances
        backend = getattr(predictor, "backend", None)
        self.runtime = (
            backend.name if backend is not None else getattr(predictor, "description", "")
        )

    def paths(self, item: Item) -> dict[str, Path]:
        return output_paths(self.out, item.stem, overlay=self.overlay, instances=self.instances)

    def rel(self, paths: dict[str, Path]) -> dict[str, str]:
        return {k: p.relative_to(self.out).as_posix() for k, p in paths.items()}

    def block(self, block: list[Loaded]) -> int:
        """Predict and write one block; returns the number of errors."""
        errors = 0
        readable = [ld for ld in block if ld.image is not None]
        results: dict[int, tuple[np.ndarray, Any]] = {}
        net_ms = 0.0
        if readable:
            start = time.perf_counter()
            results = self._predict(readable)
            net_ms = 1000 * (time.perf_counter() - start) / len(readable)
        for ld in block:
            if ld.clip:  # a video: predicted here, whole, in input order
                errors += clip_row(self, ld)
                continue
            got = results.get(id(ld))
            if isinstance(got, str):
                ld.error, got = got, None
            if ld.done:
                self._existing(ld, got)
            elif got is None:
                errors += 1
                log.warning("skipped: %s", ld.error)
                row = {"input": ld.item.path, "status": "error", "error": ld.error,
                       "runtime": self.runtime, "ms": f"{ld.ms:.1f}"}  # fmt: skip
                self.part.put(
                    ld.item, lambda row=row: row, keep=lambda old: old["status"] == "error"
                )
            else:
                self._write(ld, *got, ms=ld.ms + net_ms)
        self.part.flush()
        return errors

    def _predict(self, readable: list[Loaded]) -> dict[int, Any]:
        """``id(loaded) -> (mask, detector result | None)``, or an error text; the block is
        one batch (split only where working sizes differ), falling back to one image at a
        time when the batch fails."""
        p = self.predictor
        try:
            masks = p.predict_many((ld.image for ld in readable), batch_size=self.batch_size)
            return {id(ld): (m, getattr(p, "last", None)) for ld, m in zip(readable, masks)}
        except Exception as exc:  # one bad image must not end the run
            if len(readable) == 1:
                return {id(readable[0]): f"cannot predict {readable[0].item.path}: {exc}"}
        return {k: v for ld in readable for k, v in self._predict([ld]).items()}

    def _write(self, ld: Loaded, mask: np.ndarray, result: Any, *, ms: float) -> None:
        start = time.perf_counter()
        paths = self.paths(ld.item)
        if self.instances and result is not None:
            from handseg.infer.media import write_instances

            write_instances(result, self.out, ld.item.stem)
        if self.overlay:
            atomic_save_image(overlay_image(ld.image, mask), paths["overlay"], quality=90)
        save_mask_png(mask, paths["mask"])
        ms += 1000 * (time.perf_counter() - start)
        row = {"input": ld.item.path, "status": "ok", **self.rel(paths),
               "height": mask.shape[0], "width": mask.shape[1], "hand_share": _hand_share(mask),
               "hands": len(result.hands) if result is not None else "",
               "runtime": self.runtime, "ms": f"{ms:.1f}"}  # fmt: skip
        self.part.put(ld.item, lambda: row, keep=lambda old: False)

    def _existing(self, ld: Loaded, got: tuple[np.ndarray, Any] | None) -> None:
        """An input whose outputs were complete: keep its row of the earlier run, or make
        one from the mask just computed (or read back)."""

        def make() -> dict[str, Any]:
            paths = self.paths(ld.item)
            mask = got[0] if got else np.asarray(Image.open(paths["mask"]))
            hands = ""
            if self.instances:
                import json

                hands = len(json.loads(paths["instances"].read_text())["hands"])
            return {"input": ld.item.path, "status": "existing", **self.rel(paths),
                    "height": mask.shape[0], "width": mask.shape[1],
                    "hand_share": _hand_share(mask), "hands": hands, "runtime": self.runtime}  # fmt: skip

        self.part.put(ld.item, make, keep=lambda old: old["status"] in ("ok", "existing"))


_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp\.(png|jpg|json|csv|jsonl|pose)$")
"""The temporary file of an atomic write (:func:`handseg.core.io.atomic_write`)."""


def _remove_leftovers(out: Path) -> int:
    """Delete the temporary files that killed runs left in ``out`` (every process is done:
    none is being written); returns how many."""
    n = 0
    stack = [str(out)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False) and e.name != PARTS:
                    stack.append(e.path)
                elif _LEFTOVER.match(e.name) and e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
                    n += 1
    if n:
        log.info("removed %d temporary file(s) left by an interrupted run", n)
    return n


def predict_collection(
    predictor: Any,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    lists: Sequence[str | Path] = (),
    batch_size: int = 4,
    overlay: bool = True,
    instances: bool = False,
    skip_existing: bool = False,
    workers: int = 2,
    dist: Distributed | None = None,
    progress: bool = True,
    clip_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict this process's share of a collection (see the module docstring) and, on
    rank 0 once all processes are done, write ``OUT/manifest.csv``.

    Returns ``{"manifest": Path, "counts": {status: rows} (rank 0; None elsewhere),
    "rank", "world_size", "errors": this process's bad inputs}``.
    """
    if batch_size < 1:
        raise HandsegError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise HandsegError(f"--workers must be 0 or more, got {workers}")
    if instances and not hasattr(predictor, "last"):
        raise HandsegError("--instances needs the hand detector: add --detector mediapipe")
    d = dist or Distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs, lists = [str(i) for i in inputs], [str(x) for x in lists]
    dataset = CollectionDataset(
        inputs, lists, out, rank=d.rank, world_size=d.world_size, batch_size=batch_size,
        skip_existing=skip_existing, overlay=overlay, instances=instances,
    )  # fmt: skip
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is)
    show = progress and d.rank == 0
    total = _rank_share(count_inputs(inputs, lists), batch_size, 0, d.world_size) if show else 0
    if d.rank == 0:  # the manifest describes a finished run: none while this one runs
        (out / MANIFEST).unlink(missing_ok=True)
    part = ManifestPart(out / PARTS / f"rank{d.rank}.csv", resume=skip_existing)
    writer = _Writer(
        predictor, out, part, batch_size=batch_size, overlay=overlay, instances=instances,
        clip_options=clip_options,
    )  # fmt: skip
    desc = "predict" if d.world_size == 1 else f"predict (rank 0 of {d.world_size})"
    errors = 0
    try:
        with tqdm(total=total, desc=desc, unit="img", disable=not show) as bar:
            for _, block in loader:
                errors += writer.block(block)
                bar.update(len(block))
    finally:
        part.close()
    d.barrier()
    counts = None
    if d.rank == 0:
        counts = merge_manifest(out, d.world_size, batch_size)
        _remove_leftovers(out)
    return {"manifest": out / MANIFEST, "counts": counts, "rank": d.rank,
            "world_size": d.world_size, "errors": errors}  # fmt: skip
