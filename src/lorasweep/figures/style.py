"""The look shared by every figure: theme, panel sizes, one style per axis value, and saving.

Every figure shows the mean over seeds with ± one standard deviation where there are several
seeds, uses a colour-blind-safe palette, is sized for one column (3.4 in) per panel, and is saved
as PDF and PNG with fixed metadata so reruns produce identical bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lorasweep.io import write_bytes  # noqa: E402
from lorasweep.options import INITS, SCALINGS  # noqa: E402

COLUMN_WIDTH = 3.4
PANEL_HEIGHT = 2.6
FULL_COLOR = "0.15"
THEORY_COLOR = "0.45"
LINE_STYLES = ["-", "--", ":", "-."]


def categorical_colors(values) -> dict:
    """One colour-blind-safe colour per value, in the order given (cycling after ten)."""
    values = list(values)
    return dict(zip(values, sns.color_palette("colorblind", n_colors=len(values)), strict=True))


SCALING_COLORS = categorical_colors(SCALINGS)
"""One colour per scaling rule, the same in every figure (α/r blue, α/√r orange, α green)."""
SCALING_LABELS = {"standard": "α/r", "rslora": "α/√r", "constant": "α"}
INIT_COLORS = categorical_colors(INITS)
LORA_COLOR = sns.color_palette("colorblind")[0]
"""LoRA drawn in one colour (its best settings at each rank)."""


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.9)
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "axes.titlesize": 8,
            "legend.fontsize": 6.5,
            "legend.title_fontsize": 7,
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
        fig.savefig(buffer, format=fmt, metadata=metadata)
        write_bytes(path, buffer.getvalue())
    plt.close(fig)


class NoData(Exception):
    """The tables hold nothing this figure can draw (for example every run diverged); the
    message says what is missing. :func:`lorasweep.figures.make_figure` saves a figure with
    the message instead."""


NO_DATA_LABEL = "no data: "
"""Label of a figure drawn by :func:`no_data`, followed by its message."""


def subplot_grid(n_rows: int, n_cols: int, **kwargs) -> tuple[plt.Figure, np.ndarray]:
    """A grid of one-column panels; :class:`NoData` when there is no panel to draw."""
    if n_rows < 1 or n_cols < 1:
        raise NoData("no completed runs to draw")
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(COLUMN_WIDTH * n_cols, PANEL_HEIGHT * n_rows),
        squeeze=False,
        **kwargs,
    )
    return fig, axes


def dataset_panels(frame: pd.DataFrame) -> tuple[list, plt.Figure, np.ndarray]:
    """The datasets of ``frame`` (sorted) and a row of one panel each."""
    datasets = sorted(frame["dataset"].unique())
    fig, axes = subplot_grid(1, len(datasets))
    return datasets, fig, axes


def legend_outside(fig: plt.Figure, axes: np.ndarray, **kwargs) -> None:
    """One framed legend of every labelled artist in ``axes``, right of the panels, so it never
    covers data; the saved figure widens to hold it."""
    entries: dict = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=True,
        **kwargs,
    )


def rank_colors(ranks) -> dict:
    ranks = sorted(int(r) for r in ranks)
    if not ranks:
        return {}
    colors = sns.color_palette("viridis", n_colors=len(ranks))
    return dict(zip(ranks, colors, strict=True))


def line_styles(values) -> dict:
    """One line style per value (for example per α), in sorted order."""
    return {v: LINE_STYLES[k % len(LINE_STYLES)] for k, v in enumerate(sorted(values))}


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
    return frame.groupby(by)[column].agg(["mean", "std"]).fillna(0.0)


def errorbar(ax, x, mean, sd, color, label, size: float = 3, **kwargs) -> None:
    """Mean ± sd markers joined by a line, in the figures' common style."""
    ax.errorbar(x, mean, yerr=sd, marker="o", markersize=size, capsize=2 * size / 3,
                color=color, label=label, **kwargs)  # fmt: skip


def errorbar_by(ax, frame: pd.DataFrame, by: str, column: str, color, label, **kwargs) -> None:
    """:func:`errorbar` of ``column``'s mean ± sd for each value of ``by``."""
    stats = mean_sd(frame, by, column)
    errorbar(ax, stats.index, stats["mean"], stats["std"], color, label, **kwargs)


def log_axes(ax, xlabel: str, ylabel: str, title: str, x_base: int = 2, legend=True) -> None:
    """Log-log axes (x in powers of ``x_base``) with labels, title and a framed legend."""
    ax.set_xscale("log", base=x_base)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(frameon=True)


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
    sns.heatmap(
        values,
        ax=ax,
        annot=grid.map(fmt),
        fmt="",
        annot_kws={"fontsize": 5},
        cmap="viridis_r",
        **kwargs,
    )
    ax.set_xticklabels([tick(t.get_text()) for t in ax.get_xticklabels()])
    ax.set_yticklabels([tick(t.get_text()) for t in ax.get_yticklabels()], rotation=0)


def tick(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def dataset_scaling_panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, scaling rule) pairs present in ``frame``, datasets sorted, rules in order."""
    return [
        (dataset, scaling)
        for dataset in sorted(frame["dataset"].unique())
        for scaling in ordered_scalings(frame.loc[frame["dataset"] == dataset, "scaling"])
    ]


def ordered_scalings(values) -> list[str]:
    present = set(values.dropna())
    return [s for s in SCALINGS if s in present]


def scaling_label(scaling: str) -> str:
    return SCALING_LABELS.get(scaling, scaling)
