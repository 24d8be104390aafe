"""The report's pictures: files in ``<name>-files/`` beside the page, linked relatively, or
(``embed=True``) ``data:`` URIs, so the HTML file stands alone.

The files folder is marked as the report's own; a later report clears and rewrites it,
but never a folder of the same name that handseg did not write.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write_bytes, atomic_write_text

__all__ = ["Assets"]

MARKER = ".handseg-report"  # marks an assets folder this module may clear and rewrite


class Assets:
    """Where the pictures of the page ``html_path`` are written, and how the page links them.

    Use as a context manager: with ``embed`` the pictures are drawn in a temporary folder
    that is removed on exit.
    """

    def __init__(self, html_path: Path, embed: bool) -> None:
        self.embed = embed
        self.html_dir = html_path.parent
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if embed:
            self._tmp = tempfile.TemporaryDirectory(prefix="handseg-report-")
            self.folder = Path(self._tmp.name)
            return
        self.folder = html_path.parent / f"{html_path.stem}-files"
        if self.folder.is_dir() and (self.folder / MARKER).is_file():
            shutil.rmtree(self.folder)  # ours: drop pictures of an earlier report
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise HandsegError(
                f"{self.folder} exists and was not written by handseg report; move it away "
                "or choose another --out"
            )
        atomic_write_text(self.folder / MARKER, "pictures of a handseg report; safe to delete\n")

    def __enter__(self) -> Assets:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def path(self, name: str) -> Path:
        """The file for picture ``name`` (e.g. ``compare/001-a.png``); its folder exists."""
        p = self.folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def copy(self, source: Path, name: str) -> Path:
        """Copy the picture ``source`` in as ``name``; returns the copy."""
        return atomic_write_bytes(self.path(name), source.read_bytes())

    def url(self, path: Path) -> str:
        """The ``src=``/``href=`` value for the picture ``path``: a relative, percent-encoded
        URL, or a ``data:`` URI with ``embed`` (the template escapes it for the attribute)."""
        if self.embed:
            mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
            return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        return quote(path.resolve().relative_to(self.html_dir.resolve()).as_posix())

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
