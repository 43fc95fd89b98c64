"""Paper-style figures, one registered drawing function each (see :mod:`.registry`).

Importing this package registers every figure; the import order below is the report order.
"""

# isort: skip_file
from pathlib import Path

from lorasweep.figures import loss, heatmaps, geometry, ablations, evidence  # noqa: F401
from lorasweep.figures import overview, tutorial, deep, methods  # noqa: F401
from lorasweep.figures.registry import FIGURES, Tables
from lorasweep.figures.style import (
    NoData,
    finish,
    no_data,
    no_data_message,
    save_figure,
    set_style,
)


def render_figure(name: str, tables: Tables):
    """The registered figure ``name`` drawn from ``tables`` in the common style, or a figure
    saying why there is nothing to draw."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    set_style()
    try:
        fig = FIGURES[name].draw(tables)
    except NoData as err:
        fig = no_data(str(err))
    return finish(fig)


def make_figure(name: str, tables: Tables, pdf: str | Path, png: str | Path) -> str | None:
    """Draw the registered figure ``name`` from ``tables`` and save it as PDF and PNG.

    Where the tables hold nothing it can draw, the saved figure says so instead; the message
    is returned (None for a drawn figure).
    """
    fig = render_figure(name, tables)
    message = no_data_message(fig)
    save_figure(fig, pdf, png)
    return message
