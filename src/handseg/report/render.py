"""Rendering the report page: the jinja2 template ``templates/report.html.j2`` (every value
autoescaped) with the style sheet ``templates/report.css`` inlined, so the page is one file.
"""

from __future__ import annotations

import functools
import math

import jinja2

from handseg.report.context import Page

__all__ = ["TEMPLATE", "environment", "fmt", "render_page"]

TEMPLATE = "report.html.j2"


def fmt(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; "n/a" when undefined (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _known(value: float) -> bool:
    """Template test ``v is known``: a number, not NaN."""
    return not math.isnan(value)


@functools.cache
def environment() -> jinja2.Environment:
    """The template environment (built on first use): autoescaping on, and an undefined
    name in the template is an error rather than an empty string."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("handseg.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.tests["known"] = _known
    return env


def render_page(page: Page) -> str:
    """The report's HTML."""
    return environment().get_template(TEMPLATE).render(page=page)
