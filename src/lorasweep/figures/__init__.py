"""Paper-style figures, one registered drawing function each (see :mod:`.registry`).

Importing this package registers every figure; the import order below is the report order.
"""

# isort: skip_file
from pathlib import Path

from lorasweep.figures import loss, heatmaps, geometry, ablations, evidence  # noqa: F401
from lorasweep.figures import overview, tutorial, deep  # noqa: F401
from lorasweep.figures.registry import FIGURES, Tables
from lorasweep.figures.style import save_figure, set_style


def make_figure(name: str, tables: Tables, pdf: str | Path, png: str | Path) -> None:
    """Draw the registered figure ``name`` from ``tables`` and save it as PDF and PNG."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    set_style()
    save_figure(FIGURES[name].draw(tables), pdf, png)
