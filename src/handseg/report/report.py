"""``handseg report RUN``: one HTML page that explains a training run to a newcomer.

The page (default ``RUN/report.html``) holds a summary of what was trained, the headline
test metrics, the training-progress plot, the data-set and class metric tables, the
normalised confusion matrix, the seed's comparison figure for every test image (worst
first) and an overlay gallery, each with a plain-language explanation. Its pictures are
written beside it in ``<name>-files/`` and linked relatively, so the folder can be moved
or zipped as a whole; with ``embed=True`` they are inlined as ``data:`` URIs instead and
the HTML file stands alone.

A run folder that lacks pieces (no ``test/`` because of ``--no-test``, no ``model.pt``
because training was interrupted) still gets a report; it says what is missing and which
command adds it.

The steps, one module each: :mod:`~handseg.report.run` reads the run folder,
:mod:`~handseg.report.figures` draws the pictures into :mod:`~handseg.report.assets`,
:mod:`~handseg.report.context` gathers what the page says, and
:mod:`~handseg.report.render` fills the template ``templates/report.html.j2``.
"""

from __future__ import annotations

from pathlib import Path

from handseg.core.errors import HandsegError
from handseg.core.io import atomic_write_text
from handseg.core.rundir import RunDir
from handseg.report.assets import Assets
from handseg.report.context import Pictures, build_page
from handseg.report.figures import confusion_picture, progress_picture, score_test_images
from handseg.report.render import render_page
from handseg.report.run import RunData, read_run

__all__ = ["write_report"]


def _check_run_folder(run_dir: RunDir) -> None:
    if not run_dir.path.is_dir():
        raise HandsegError(
            f"run folder {run_dir} does not exist; pass the folder of a training run"
        )
    if not run_dir.is_run():
        names = ", ".join(
            p.name for p in (run_dir.config, run_dir.model, run_dir.history, run_dir.split)
        )
        raise HandsegError(
            f"{run_dir} is not a training run folder (it has none of {names}); "
            "pass the folder that `handseg train --out` wrote"
        )


def _output_path(run_dir: RunDir, out_html: str | Path | None) -> Path:
    """The page to write: ``out_html`` (a folder gets ``report.html`` in it) or the run's."""
    out = Path(out_html) if out_html is not None else run_dir.report
    if out.is_dir():
        out = out / run_dir.report.name
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HandsegError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    return out


def _notes(run: RunData) -> list[tuple[str, str]]:
    """Lines for the "Missing" section beyond the run's missing files."""
    if run.card is not None and run.split_sizes and not run.split_sizes.get("test"):
        return [("test images", "the split has no test subset, so there is nothing to show")]
    return []


def write_report(
    run_dir: str | Path,
    out_html: str | Path | None = None,
    *,
    embed: bool = False,
    device: str = "cpu",
    progress: bool = False,
) -> Path:
    """Write the HTML report of a training run.

    Args:
        run_dir: the folder ``handseg train --out`` wrote.
        out_html: the page to write (default ``RUN/report.html``). Its pictures go beside it
            in ``<stem>-files/`` (replaced on every call), linked by relative paths.
        embed: inline the pictures as ``data:`` URIs instead (one self-standing file).
        device: where the model runs to draw the test-image figures.
        progress: show a progress bar while the figures are drawn.

    Returns:
        The path of the HTML file.

    Raises:
        HandsegError: ``run_dir`` is not a training run folder, or the output folder
            cannot be written.
    """
    rd = RunDir(run_dir)
    _check_run_folder(rd)
    out = _output_path(rd, out_html)
    run = read_run(rd)
    with Assets(out, embed) as assets:
        pictures = Pictures(
            progress=progress_picture(run, assets),
            confusion=confusion_picture(run, assets),
            images=score_test_images(run, assets, device, progress),
        )
        text = render_page(build_page(run, pictures, _notes(run), assets))
    return atomic_write_text(out, text)
