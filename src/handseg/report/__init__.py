"""The HTML report of a training run (``handseg report RUN``): see :mod:`.report`."""

from handseg.report.report import write_report

__all__ = ["write_report"]
