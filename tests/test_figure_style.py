"""Every registered figure in one style, drawn from one small run of tests/configs/figures.yaml:
one of two widths, one dpi, one font family and size scale, nothing outside the figure, legends
off the data, titles and tick labels that do not collide, and captions that are valid reST."""

import io
import re
from pathlib import Path

import docutils.core
import pandas as pd
import pytest
import yaml
from matplotlib.text import Text
from PIL import Image

from lorasweep.config import validated
from lorasweep.figures import FIGURES, make_figure, no_data_message, render_figure
from lorasweep.figures.registry import Tables, figures_for
from lorasweep.figures.style import DPI, FONT_FAMILY, FONT_SIZES, WIDTHS
from lorasweep.tables.runs import read_runs

from .conftest import CONFIGS, REPO

CAPTIONS = REPO / "workflow" / "report" / "captions"


@pytest.fixture(scope="module")
def tables(figures_run):
    """The tables each figure declares, read as the figure job reads them."""
    folder = figures_run / "results" / "tables"

    def read(name: str) -> Tables:
        extra = {n: pd.read_csv(folder / f"{n}.csv") for n in FIGURES[name].tables if n != "runs"}
        return Tables(runs=read_runs(folder / "runs.csv"), **extra)

    return read


def test_the_figures_config_draws_every_registered_figure():
    config = validated(yaml.safe_load((CONFIGS / "figures.yaml").read_text()))
    assert figures_for(config) == list(FIGURES)


def visible_texts(fig) -> list[Text]:
    """The texts that are drawn: not hidden, not empty, and no tick label outside its axis."""
    undrawn = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * max(abs(low), abs(high), 1.0)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - slack <= tick.get_loc() <= high + slack:
                    undrawn |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]  # fmt: skip


def overlapping(boxes: list) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1 :], i + 1)
            if a.overlaps(b) and a.intersection(a, b).width > 1
            and a.intersection(a, b).height > 1]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_is_in_the_common_style(name, tables, tmp_path):
    fig = render_figure(name, tables(name))
    assert no_data_message(fig) is None, f"{name} drew nothing: {no_data_message(fig)}"
    assert fig.get_figwidth() in WIDTHS
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox.padded(1)
    drawn = visible_texts(fig)
    for text in drawn:
        what = f"{name}: {text.get_text()!r}"
        assert text.get_fontsize() in FONT_SIZES.values(), f"{what} is {text.get_fontsize()} pt"
        assert text.get_fontname() == FONT_FAMILY, f"{what} is in {text.get_fontname()}"
        box = text.get_window_extent(renderer)
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), (
            f"{what} is cut off"
        )
    data = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        covered = [ax.get_title() for ax in data if ax.get_window_extent(renderer).overlaps(box)]
        assert not covered, f"{name}: a legend covers the data of {covered}"
    titles = [ax.title for ax in data if ax.title.get_text()]
    clashes = overlapping([t.get_window_extent(renderer) for t in titles])
    assert not clashes, f"{name}: titles run into each other: {clashes}"
    for ax in data:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            shown = [t for t in labels if t in drawn]
            clashes = overlapping([t.get_window_extent(renderer) for t in shown])
            assert not clashes, f"{name}: tick labels collide: {[t.get_text() for t in shown]}"
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    make_figure(name, tables(name), pdf, png)
    image = Image.open(png)
    assert round(image.info["dpi"][0]) == DPI
    assert image.size[0] / DPI in WIDTHS, f"{name} is {image.size[0]} px wide"
    media = re.search(rb"/MediaBox \[ *0 0 ([\d.]+) ([\d.]+) *\]", pdf.read_bytes())
    assert float(media.group(1)) / 72 in WIDTHS


@pytest.mark.integration
def test_deep_learning_curves_share_one_panel_for_the_target_sets_run_at_one_rank(tables):
    fig = render_figure("deep_learning_curves", tables("deep_learning_curves"))
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == [
        "tf · targets attention", "tf · targets mlp", "tf · targets all",
        "tf · target sets at one rank",
    ]  # fmt: skip


@pytest.mark.parametrize("caption", sorted(CAPTIONS.glob("*.rst")), ids=lambda p: p.stem)
def test_caption_is_valid_restructured_text(caption: Path):
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        caption.read_text(encoding="utf-8"),
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": warnings},
    )
    assert warnings.getvalue() == "", f"{caption.name}: {warnings.getvalue()}"


def test_every_figure_has_a_caption():
    assert sorted(p.stem for p in CAPTIONS.glob("*.rst")) == sorted(FIGURES)
