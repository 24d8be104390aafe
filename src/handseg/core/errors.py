"""The one exception type users see: a one-line message that says what to do."""

from __future__ import annotations


class HandsegError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback,
    so the message must name the file or option at fault and say how to fix it.
    """
