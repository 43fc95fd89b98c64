"""The look shared by every figure: one theme, two widths, one font and size scale, one dpi,
one colour per axis value, log axes that label without collisions, legends outside the data,
and saving.

Every figure shows the mean over seeds with ± one standard deviation where there are several
seeds, uses colour-blind-safe palettes (the same colour for the same rank, scaling rule or init
in every figure), is :data:`SINGLE_WIDTH` or :data:`DOUBLE_WIDTH` wide, and is saved as PDF and
PNG at :data:`DPI` with fixed metadata so reruns produce identical bytes.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lorasweep.io import write_bytes  # noqa: E402
from lorasweep.models import registry  # noqa: E402
from lorasweep.options import INITS, SCALINGS  # noqa: E402

SINGLE_WIDTH = 3.5
"""Width in inches of a one-column figure (one panel)."""
DOUBLE_WIDTH = 7.0
"""Width in inches of a two-column figure (two panels or more)."""
WIDTHS = (SINGLE_WIDTH, DOUBLE_WIDTH)
MAX_COLUMNS = 3
"""Most panels side by side in a double-width figure; more wrap onto further rows."""
PANEL_ASPECT = 0.78
"""Height of a panel over its width."""
MAX_PANEL_HEIGHT = 2.6
DPI = 200
FONT_FAMILY = "DejaVu Sans"
FONT_SIZES = {"small": 6.0, "normal": 7.0, "large": 8.0}
"""The size scale in points: small for ticks, legends and annotations, normal for axis labels,
large for panel titles. No text of a figure has another size."""
SMALL, NORMAL, LARGE = FONT_SIZES.values()
FIT_PASSES = 3
"""Layouts in which labels are fitted to their panels (a wrapped title can narrow a panel)."""
FULL_COLOR = "0.15"
THEORY_COLOR = "0.45"
LINE_STYLES = ["-", "--", ":", "-."]


def categorical_colors(values) -> dict:
    """One colour-blind-safe colour per value, in the order given (cycling after ten)."""
    values = list(values)
    return dict(zip(values, sns.color_palette("colorblind", n_colors=len(values)), strict=True))


SCALING_COLORS = categorical_colors(SCALINGS)
"""One colour per scaling rule, the same in every figure (α/r blue, α/√r orange, α green)."""
SCALING_LABELS = {rule.name: rule.label for rule in registry.SCALING_RECORDS}
INIT_COLORS = categorical_colors(INITS)
LORA_COLOR = sns.color_palette("colorblind")[0]
"""LoRA drawn in one colour (its best settings at each rank)."""
_ADAPTERS = [m for m in registry.METHOD_RECORDS if m.adapter]
_COLORS = [LORA_COLOR, *sns.color_palette("colorblind")[4:], *sns.color_palette("dark")[4:]]
METHOD_COLORS = {m.name: c for m, c in zip(_ADAPTERS, _COLORS[: len(_ADAPTERS)], strict=True)}
"""One colour per adapter method, LoRA's being :data:`LORA_COLOR`; the colour-blind palette's
after the first four, then the dark palette's (twelve methods)."""
METHOD_LINE_STYLES = {
    m.name: style
    for m, style in zip(
        _ADAPTERS,
        ["-", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)),
         (0, (1, 3)), (0, (5, 2, 1, 2)), (0, (2, 1)), (0, (8, 1, 1, 1)), (0, (1, 1, 3, 1)),
         (0, (4, 1, 4, 3)), (0, (6, 1, 1, 1, 1, 1, 1, 1))],
        strict=True,
    )
}  # fmt: skip
"""One line style per adapter method, for figures whose colours are ranks or rules: LoRA solid,
DoRA dash-dotted densely, unlike full FT's dashes; the methods trained through PEFT each a
pattern of their own."""


def method_parts(frame: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """``frame``'s rows by adapter method, each with the prefix of its legend labels and the
    keywords of its lines: one part with no prefix and no keywords where one method ran (the
    figure is as it was), else each method's label (``"DoRA "``) and line style, in the
    registry's order."""
    if "method" not in frame or frame["method"].nunique() <= 1:
        return [("", {}, frame)]
    order = [m.name for m in registry.METHOD_RECORDS if (frame["method"] == m.name).any()]
    return [
        (f"{registry.method(name).label} ", {"linestyle": METHOD_LINE_STYLES[name]},
         frame[frame["method"] == name])
        for name in order
    ]  # fmt: skip


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font=FONT_FAMILY)
    plt.rcParams.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": [FONT_FAMILY],
            "font.size": NORMAL,
            "axes.titlesize": LARGE,
            "axes.labelsize": NORMAL,
            "xtick.labelsize": SMALL,
            "ytick.labelsize": SMALL,
            "legend.fontsize": SMALL,
            "legend.title_fontsize": SMALL,
            "figure.titlesize": LARGE,
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "savefig.bbox": None,
            "figure.constrained_layout.use": True,
            "legend.frameon": True,
            "pdf.fonttype": 42,
            "svg.hashsalt": "lorasweep",
        }
    )


def save_figure(fig: plt.Figure, pdf_path: str | Path, png_path: str | Path) -> None:
    """Write PDF and PNG atomically, without creation dates or software versions."""
    for path, fmt, metadata in (
        (pdf_path, "pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
        (png_path, "png", {"Software": None}),
    ):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata, dpi=DPI)
        write_bytes(path, buffer.getvalue())
    plt.close(fig)


class NoData(Exception):
    """The tables hold nothing this figure can draw (for example every run diverged); the
    message says what is missing. :func:`lorasweep.figures.make_figure` saves a figure with
    the message instead."""


NO_DATA_LABEL = "no data: "
"""Label of a figure drawn by :func:`no_data`, followed by its message."""


def figure_size(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Single width for one column of panels, double for more; the height follows the
    panels' width."""
    width = SINGLE_WIDTH if n_cols == 1 else DOUBLE_WIDTH
    panel = min(PANEL_ASPECT * width / n_cols, MAX_PANEL_HEIGHT)
    return width, panel * n_rows + 0.3


def subplot_grid(n_rows: int, n_cols: int, **kwargs) -> tuple[plt.Figure, np.ndarray]:
    """A grid of panels at one of the two widths; :class:`NoData` when there is no panel."""
    if n_rows < 1 or n_cols < 1:
        raise NoData("no completed runs to draw")
    if n_cols > MAX_COLUMNS:
        raise ValueError(f"{n_cols} columns do not fit; use panel_grid to wrap them")
    return plt.subplots(n_rows, n_cols, figsize=figure_size(n_rows, n_cols), squeeze=False,
                        **kwargs)  # fmt: skip


def panel_grid(n_panels: int, **kwargs) -> tuple[plt.Figure, list]:
    """``n_panels`` panels in rows of at most :data:`MAX_COLUMNS`, in reading order; the
    unused cells of the last row are hidden."""
    columns = min(max(n_panels, 1), MAX_COLUMNS)
    fig, axes = subplot_grid(math.ceil(n_panels / columns), columns, **kwargs)
    for ax in axes.flat[n_panels:]:
        ax.set_axis_off()
    return fig, list(axes.flat[:n_panels])


def natural_key(value) -> tuple:
    """Sort key that orders the numbers inside names by value (task2 < task8 < task32)."""
    parts = re.split(r"(\d+)", str(value))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)


def natural_sorted(values) -> list:
    return sorted(values, key=natural_key)


def datasets_of(frame: pd.DataFrame) -> list:
    """The datasets of ``frame`` in natural order."""
    return natural_sorted(frame["dataset"].dropna().unique())


def dataset_panels(frame: pd.DataFrame) -> tuple[list, plt.Figure, list]:
    """The datasets of ``frame`` (natural order) and a panel each."""
    datasets = datasets_of(frame)
    fig, axes = panel_grid(len(datasets)) if datasets else subplot_grid(0, 0)
    return datasets, fig, axes


def legend_entries(axes) -> dict:
    """Every labelled artist of ``axes``, one per label, in the order first drawn."""
    entries: dict = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return entries


def legend_outside(fig: plt.Figure, axes=None, handles=None, columns: int | None = None):
    """One legend for the whole figure, below the panels so it never covers data: of
    ``handles`` where given, else of every labelled artist in ``axes``."""
    if handles is None:
        entries = legend_entries(axes if axes is not None else fig.axes)
        handles, labels = list(entries.values()), list(entries)
    else:
        labels = [h.get_label() for h in handles]
    if not handles:
        return None
    width = fig.get_figwidth()
    longest = max(len(label) for label in labels)
    fits = max(1, int(width * 72 / (SMALL * 0.62 * longest + 30)))
    ncol = columns or min(len(handles), fits)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol)


def legend_beside(ax, **kwargs) -> None:
    """The legend of ``ax`` right of it, outside the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), borderaxespad=0, **kwargs)


def rank_colors(ranks) -> dict:
    ranks = sorted(int(r) for r in ranks)
    if not ranks:
        return {}
    colors = sns.color_palette("viridis", n_colors=len(ranks))
    return dict(zip(ranks, colors, strict=True))


def line_styles(values) -> dict:
    """One line style per value (for example per α), in sorted order."""
    return {v: LINE_STYLES[k % len(LINE_STYLES)] for k, v in enumerate(natural_sorted(values))}


def band(ax, x, mean, sd, color, label=None, **kwargs):
    ax.plot(x, mean, color=color, label=label, **kwargs)
    if np.any(np.asarray(sd) > 0):
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)


def band_by(ax, frame: pd.DataFrame, by: str, column: str, color, label, **kwargs) -> None:
    """:func:`band` of ``column``'s mean ± sd for each value of ``by``."""
    stats = mean_sd(frame, by, column)
    band(ax, stats.index, stats["mean"], stats["std"], color, label, **kwargs)


def mean_sd(frame: pd.DataFrame, by: str, column: str) -> pd.DataFrame:
    """Mean and sample sd (0 for a single value) of ``column`` for each value of ``by``."""
    return frame.groupby(by, dropna=False)[column].agg(["mean", "std"]).fillna(0.0)


def pareto_mask(frame: pd.DataFrame, cost: str, loss: str) -> pd.Series:
    """Per dataset, the rows no row with at most as much ``cost`` beats on ``loss`` (ties in
    cost go to the lower loss): the Pareto front."""
    front = pd.Series(False, index=frame.index)
    for _, group in frame.groupby("dataset", dropna=False):
        best = np.inf
        for index, row in group.sort_values([cost, loss]).iterrows():
            if row[loss] < best:
                best = row[loss]
                front[index] = True
    return front


def matching(frame: pd.DataFrame, **values) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal ``values``, a missing value matching a missing
    one (``==`` alone never matches NaN, so it would drop single-layer rows' empty targets)."""
    keep = pd.Series(True, index=frame.index)
    for column, value in values.items():
        if pd.isna(value):
            keep &= frame[column].isna()
        else:
            keep &= frame[column] == value
    return frame[keep.fillna(False).astype(bool)]


def errorbar(ax, x, mean, sd, color, label, size: float = 3, **kwargs) -> None:
    """Mean ± sd markers joined by a line, in the figures' common style."""
    ax.errorbar(x, mean, yerr=sd, marker="o", markersize=size, capsize=2 * size / 3,
                color=color, label=label, **kwargs)  # fmt: skip


def errorbar_by(ax, frame: pd.DataFrame, by: str, column: str, color, label, **kwargs) -> None:
    """:func:`errorbar` of ``column``'s mean ± sd for each value of ``by``."""
    stats = mean_sd(frame, by, column)
    errorbar(ax, stats.index, stats["mean"], stats["std"], color, label, **kwargs)


def log_axes(ax, xlabel: str, ylabel: str, title: str, x_base: int = 2) -> None:
    """Log-log axes (x in powers of ``x_base``) with labels and title."""
    ax.set_xscale("log", base=x_base)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plain_number(value: float, _position=None) -> str:
    """A tick label without exponents: 0.01, 0.5, 30, 200, 1e+05 only past six digits."""
    return f"{value:.6g}" if value != 0 else "0"


def _decades(axis) -> float:
    low, high = axis.get_view_interval()
    return abs(math.log10(high) - math.log10(low)) if low > 0 and high > 0 else 0.0


def log_ticks(ax) -> None:
    """Label a log axis as plain numbers at whole powers of its base, at 1, 2 and 5 times
    them on less than two decades, and at evenly spaced values on less than a half, with
    unlabelled minor ticks: minor-tick labels such as 3×10¹ 4×10¹ 6×10¹ collide."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        base, decades = axis.get_transform().base, _decades(axis)
        if base == 10 and decades < 0.5:
            axis.set_major_locator(ticker.MaxNLocator(nbins=4))
        else:
            subs = (1.0, 2.0, 5.0) if base == 10 and decades < 2 else (1.0,)
            axis.set_major_locator(ticker.LogLocator(base=base, subs=subs, numticks=8))
        axis.set_major_formatter(ticker.FuncFormatter(plain_number))
        axis.set_minor_formatter(ticker.NullFormatter())


def epoch_axis(ax, label: str = "epoch") -> None:
    """Whole epochs on the x axis."""
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _fitted(text: str, width: float, measure) -> str:
    """``text`` broken into lines no wider than ``width`` (as ``measure`` measures a line):
    after spaces or underscores where it can, inside a word where it must."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in re.split(r"(?<=[ _])", paragraph):
            if measure(line + word) <= width:
                line += word
                continue
            if line.strip():
                lines.append(line.rstrip())
                line = ""
            for char in word:
                if line and measure(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line.rstrip())
    return "\n".join(lines)


def fit_labels(ax, renderer, originals: dict) -> None:
    """Break a panel's title wider than the panel, or a y label taller than it, into lines
    (from its text as drawn, kept in ``originals``), so that it neither runs into the next
    panel's nor leaves the figure."""
    box = ax.get_window_extent(renderer)
    for artist, room in ((ax.title, box.width), (ax.yaxis.label, box.height)):
        text = originals.setdefault(artist, artist.get_text())
        if text:
            props = artist.get_fontproperties()

            def measure(s, props=props):
                return renderer.get_text_width_height_descent(s, props, ismath=False)[0]

            artist.set_text(_fitted(text, 0.95 * room, measure))


def finish(fig: plt.Figure) -> plt.Figure:
    """The touches every figure gets: log ticks that cannot collide, titles and labels that
    fit."""
    panels = [ax for ax in fig.axes if ax.axison]
    for ax in panels:
        log_ticks(ax)
    originals: dict = {}
    for _ in range(FIT_PASSES):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in panels:
            if ax.get_label() != "<colorbar>":
                fit_labels(ax, renderer, originals)
    return fig


def no_data(message: str) -> plt.Figure:
    """A figure that only says why there is nothing to draw."""
    fig, axes = subplot_grid(1, 1)
    axes[0, 0].text(0.5, 0.5, f"No data: {message}", ha="center", va="center", wrap=True)
    axes[0, 0].set_axis_off()
    fig.set_label(NO_DATA_LABEL + message)
    return fig


def no_data_message(fig: plt.Figure) -> str | None:
    """The message of a figure drawn by :func:`no_data`, else None."""
    label = fig.get_label()
    return label[len(NO_DATA_LABEL) :] if label.startswith(NO_DATA_LABEL) else None


def heatmap(ax, grid: pd.DataFrame, fmt=lambda v: f"{v:.3g}", log=True, **kwargs) -> None:
    values = np.log10(grid) if log else grid
    sns.heatmap(values, ax=ax, annot=grid.map(fmt), fmt="", annot_kws={"fontsize": SMALL},
                cmap="viridis_r", **kwargs)  # fmt: skip
    ax.set_xticklabels([tick(t.get_text()) for t in ax.get_xticklabels()])
    ax.set_yticklabels([tick(t.get_text()) for t in ax.get_yticklabels()], rotation=0)


def tick(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def dataset_scaling_panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, scaling rule) pairs present in ``frame``, datasets in natural order, rules in
    order."""
    return [
        (dataset, scaling)
        for dataset in datasets_of(frame)
        for scaling in ordered_scalings(frame.loc[frame["dataset"] == dataset, "scaling"])
    ]


def ordered_scalings(values) -> list[str]:
    present = set(values.dropna())
    return [s for s in SCALINGS if s in present]


def scaling_label(scaling: str) -> str:
    return SCALING_LABELS.get(scaling, scaling)
