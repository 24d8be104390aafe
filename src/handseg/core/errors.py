"""The one exception type users see (a one-line message that says what to do), and the
pixel budget whose refusals raise it.

The budget (:data:`~handseg.core.constants.MAX_MEGAPIXELS`, or ``$HANDSEG_MAX_MEGAPIXELS``
which ``--max-megapixels`` sets) is checked by every reader from the size a file declares
(image header, COCO ``height``/``width`` and RLE ``size``, LabelMe ``imageHeight``/
``imageWidth``, CVAT PNG header, video frame size) before anything is decoded or allocated.
"""

from __future__ import annotations

import math
import os

from handseg.core.constants import MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV


class HandsegError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback,
    so the message must name the file or option at fault and say how to fix it.
    """


def max_pixels() -> int:
    """The pixel budget of one image or mask, in pixels: ``$HANDSEG_MAX_MEGAPIXELS``
    megapixels when set, else :data:`~handseg.core.constants.MAX_MEGAPIXELS` (read at each
    call, so ``--max-megapixels`` and DataLoader workers see the same value)."""
    raw = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not raw:
        return round(MAX_MEGAPIXELS * 1e6)
    try:
        mp = float(raw)
    except ValueError:
        mp = math.nan
    if not (math.isfinite(mp) and mp > 0):
        raise HandsegError(
            f"{MAX_MEGAPIXELS_ENV}={raw!r} is not a positive number of megapixels; set it to "
            f"e.g. {2 * MAX_MEGAPIXELS:g}, or unset it for the default {MAX_MEGAPIXELS:g}"
        )
    return max(1, round(mp * 1e6))


def check_pixels(width: int, height: int, what: str) -> None:
    """Raise :class:`HandsegError` unless a ``width`` x ``height`` image fits the budget
    (:func:`max_pixels`). ``what`` names it in the message (``"mask a.json: image a.jpg"``)."""
    limit = max_pixels()
    if width * height <= limit:
        return
    raise HandsegError(
        f"{what} is too large to decode safely: it declares {width} x {height} = "
        f"{width * height:,} pixels, above the limit of {limit:,} ({limit / 1e6:g} MP); "
        f"downscale it, or raise the limit with --max-megapixels MP (or {MAX_MEGAPIXELS_ENV})"
    )
