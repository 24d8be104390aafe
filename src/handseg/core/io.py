"""Writing output files safely: all or nothing, and a clear error when the disk is full.

Every file handseg writes for the user (masks, overlays, metrics, figures, model files)
goes through :func:`atomic_write`: the bytes go to a hidden temporary file in the target's
own folder (``.<name>.<random>.tmp<ext>``) and only a complete file is renamed over the
target with :func:`os.replace`, which is atomic on POSIX and Windows within one file
system. A process killed mid-write, or a write that fails because the disk filled up,
therefore leaves either the previous file or the new one, never half a file; the
temporary file is removed on failure. An ``OSError`` becomes a one-line
:class:`~handseg.errors.HandsegError` that names the file and says what to do
(``no space left on device`` for ``ENOSPC``/``EDQUOT``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from handseg.core.errors import HandsegError

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_error(path: str | os.PathLike[str], exc: OSError) -> HandsegError:
    """The :class:`HandsegError` for an ``OSError`` raised while writing ``path``."""
    code = exc.errno
    if code in _FULL:
        return HandsegError(
            f"cannot write {path}: no space left on device (or disk quota exceeded); "
            "free some space or write to another folder, then run again"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return HandsegError(
            f"cannot write {path}: permission denied or read-only file system; "
            "choose a folder you can write to"
        )
    reason = exc.strerror or str(exc) or type(exc).__name__
    return HandsegError(f"cannot write {path}: {reason}; check the output folder and retry")


def _open_temp(path: Path, mode: str, **kwargs: Any) -> tuple[IO[Any], Path]:
    """Create and open the temporary sibling of ``path`` (the seam tests use to fill the disk)."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
    )
    try:
        return os.fdopen(fd, mode, **kwargs), Path(tmp)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    fsync: bool = False,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing, all or nothing.

    Yields a file object on a temporary file next to ``path``; when the block ends without
    an exception the file is flushed (and with ``fsync`` also forced to disk, for files
    that must survive a power cut) and renamed over ``path``. On any exception the
    temporary file is removed and ``path`` is left as it was; an ``OSError`` (disk full,
    permission denied, ...) is re-raised as :class:`HandsegError` naming ``path``.
    The parent folder is created when missing.
    """
    if not any(m in mode for m in "wx") or "+" in mode:
        raise ValueError(f"atomic_write opens files for writing only, not mode {mode!r}")
    path = Path(path)
    kwargs: dict[str, Any] = {}
    if "b" not in mode:
        kwargs = {"encoding": encoding or "utf-8", "newline": newline}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f, tmp = _open_temp(path, mode.replace("x", "w"), **kwargs)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            yield f
            f.flush()
            if fsync:
                with contextlib.suppress(AttributeError, io.UnsupportedOperation):
                    os.fsync(f.fileno())
        finally:
            f.close()  # may raise too: a full disk often shows only when buffers flush
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


@functools.cache
def _umask() -> int:
    """The process umask (read once: setting it is the only way to read it portably)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes | memoryview, *, fsync: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_image(
    image: Any, path: str | os.PathLike[str], *, format: str | None = None, **params: Any
) -> Path:
    """Save a PIL image or an (H, W) / (H, W, 3) uint8 array to ``path`` atomically.

    The format follows the extension unless ``format`` names it; ``params`` go to
    ``PIL.Image.save`` (e.g. ``quality=90``). The image is encoded in memory first, so a
    write error keeps its errno (PIL's own file writer reports only "encoder error").
    """
    from PIL import Image

    path = Path(path)
    im = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
    fmt = format or Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise HandsegError(f"cannot write {path}: unknown image extension {path.suffix!r}")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return atomic_write_bytes(path, buf.getbuffer())


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kw: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically; the format follows the extension."""
    path = Path(path)
    savefig_kw.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    buf = io.BytesIO()
    fig.savefig(buf, **savefig_kw)
    return atomic_write_bytes(path, buf.getbuffer())


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically and durably (fsync before the rename).

    Serialised in memory first: torch turns a failed write into a ``RuntimeError``
    ("unexpected pos"), which would hide a full disk.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer(), fsync=True)
