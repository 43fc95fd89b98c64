"""Paper-style figures from the run tables.

Every figure shows the mean over seeds with ± one standard deviation where there are several
seeds, uses a colour-blind-safe palette, is sized for one column (3.4 in) per panel, and is saved
as PDF and PNG with fixed metadata so reruns produce identical bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lorasweep import analysis  # noqa: E402
from lorasweep.choices import FIGURES as FIGURE_NAMES  # noqa: E402
from lorasweep.choices import SCALINGS  # noqa: E402
from lorasweep.io import write_bytes  # noqa: E402

COLUMN_WIDTH = 3.4
PANEL_HEIGHT = 2.6
FULL_COLOR = "0.15"
THEORY_COLOR = "0.45"


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


def _panels(n_rows: int, n_cols: int, **kwargs) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(COLUMN_WIDTH * n_cols, PANEL_HEIGHT * n_rows),
        squeeze=False,
        **kwargs,
    )
    return fig, axes


def _rank_colors(ranks) -> dict:
    ranks = sorted(int(r) for r in ranks)
    colors = sns.color_palette("viridis", n_colors=max(len(ranks), 1))
    return dict(zip(ranks, colors, strict=True))


def _band(ax, x, mean, sd, color, label=None, **kwargs):
    ax.plot(x, mean, color=color, label=label, **kwargs)
    if np.any(np.asarray(sd) > 0):
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)


def _no_data(message: str) -> plt.Figure:
    fig, axes = _panels(1, 1)
    axes[0, 0].text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    axes[0, 0].set_axis_off()
    return fig


def _full_level(runs: pd.DataFrame, dataset: str) -> tuple[float, float] | None:
    best = analysis.best_full(runs)
    row = best[best["dataset"] == dataset]
    return None if row.empty else (float(row["mean"].iloc[0]), float(row["std"].iloc[0]))


def _noise_floor(runs: pd.DataFrame, dataset: str) -> float | None:
    floor = runs.loc[runs["dataset"] == dataset, "noise_floor"].dropna()
    return None if floor.empty else float(floor.iloc[0])


def learning_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure:
    """Validation loss per epoch for each rank (best settings per rank), one panel per dataset
    and scaling rule, with the best full fine-tuning curve and the noise floor."""
    lora = runs[runs["method"] == "lora"]
    if analysis.completed(lora).empty:
        return _no_data("no completed LoRA runs")
    datasets = sorted(lora["dataset"].unique())
    scalings = _ordered_scalings(lora["scaling"])
    colors = _rank_colors(lora["rank"].dropna().unique())
    fig, axes = _panels(len(datasets), len(scalings), sharey="row")
    best = analysis.best_lora_settings(runs, ["dataset", "scaling", "rank"])
    chosen = analysis.select_runs(runs, best, ["dataset", "rank", *analysis.LORA_SETTINGS])
    curves = epochs.merge(chosen[["run_id", "dataset", "scaling", "rank"]], on="run_id")
    full_best = analysis.best_full(runs)
    full_runs = analysis.select_runs(runs[runs["method"] == "full"], full_best, ["dataset", "lr"])
    full_curves = epochs.merge(full_runs[["run_id", "dataset"]], on="run_id")
    for i, dataset in enumerate(datasets):
        for j, scaling in enumerate(scalings):
            ax = axes[i, j]
            panel = curves[(curves["dataset"] == dataset) & (curves["scaling"] == scaling)]
            for rank, group in panel.groupby("rank", sort=True):
                stats = group.groupby("epoch")["val_loss"].agg(["mean", "std"]).fillna(0.0)
                _band(ax, stats.index, stats["mean"], stats["std"], colors[int(rank)], f"r={rank}")
            full = full_curves[full_curves["dataset"] == dataset]
            if not full.empty:
                stats = full.groupby("epoch")["val_loss"].agg(["mean", "std"]).fillna(0.0)
                _band(
                    ax,
                    stats.index,
                    stats["mean"],
                    stats["std"],
                    FULL_COLOR,
                    "full FT",
                    linestyle="--",
                )
            floor = _noise_floor(runs, dataset)
            if floor:
                ax.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
            ax.set_yscale("log")
            ax.set_title(f"{dataset} · {_scaling_label(scaling)}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation MSE")
    axes[0, -1].legend(loc="upper right", ncol=2, frameon=True)
    fig.tight_layout()
    return fig


def loss_vs_rank(runs: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure:
    """Final validation loss against rank per scaling rule (best other settings), with the
    Eckart–Young optimum for each rank, the noise floor, and full FT as a mean ± sd band."""
    lora = analysis.completed(runs[runs["method"] == "lora"])
    if lora.empty:
        return _no_data("no completed LoRA runs")
    datasets = sorted(lora["dataset"].unique())
    fig, axes = _panels(1, len(datasets))
    best = analysis.best_lora_settings(runs, ["dataset", "scaling", "rank"])
    palette = dict(
        zip(sorted(best["scaling"].unique()), sns.color_palette("colorblind"), strict=False)
    )
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        panel = best[best["dataset"] == dataset]
        for scaling in _ordered_scalings(panel["scaling"]):
            group = panel[panel["scaling"] == scaling]
            ax.errorbar(
                group["rank"],
                group["mean"],
                yerr=group["std"],
                marker="o",
                markersize=3,
                capsize=2,
                color=palette[scaling],
                label=_scaling_label(scaling),
            )
        optimum = (
            lora[lora["dataset"] == dataset].groupby("rank")["optimal_val_loss"].first().dropna()
        )
        if not optimum.empty:
            ax.plot(
                optimum.index,
                optimum.values,
                color=THEORY_COLOR,
                linestyle="-.",
                linewidth=1,
                label="rank-r optimum",
            )
        full = _full_level(runs, dataset)
        if full:
            mean, sd = full
            ax.axhline(mean, color=FULL_COLOR, linestyle="--", linewidth=1, label="full FT")
            ax.axhspan(mean - sd, mean + sd, color=FULL_COLOR, alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("LoRA rank r")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset)
        ax.legend(frameon=True)
    fig.tight_layout()
    return fig


def loss_vs_params(runs: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure:
    """Final validation loss against trainable parameters (log x): LoRA at each rank (best
    settings) and full FT, with the break-even rank r = d_in·d_out/(d_in + d_out) marked."""
    lora = analysis.completed(runs[runs["method"] == "lora"])
    if lora.empty:
        return _no_data("no completed LoRA runs")
    datasets = sorted(lora["dataset"].unique())
    fig, axes = _panels(1, len(datasets))
    best = analysis.best_lora_settings(runs, ["dataset", "rank"])
    params = lora.groupby(["dataset", "rank"])["trainable_params"].first().rename("params")
    best = best.join(params, on=["dataset", "rank"])
    full_best = analysis.best_full(runs)
    full_params = runs[runs["method"] == "full"].groupby("dataset")["trainable_params"].first()
    color = sns.color_palette("colorblind")[0]
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        group = best[best["dataset"] == dataset]
        ax.errorbar(
            group["params"],
            group["mean"],
            yerr=group["std"],
            marker="o",
            markersize=3,
            capsize=2,
            color=color,
            label="LoRA",
        )
        for _, row in group.iterrows():
            ax.annotate(
                f"r={row['rank']}",
                (row["params"], row["mean"]),
                fontsize=5.5,
                xytext=(2, 3),
                textcoords="offset points",
            )
        full_row = full_best[full_best["dataset"] == dataset]
        if not full_row.empty:
            x = full_params[dataset]
            ax.errorbar(
                [x],
                full_row["mean"],
                yerr=full_row["std"],
                marker="*",
                markersize=8,
                color=FULL_COLOR,
                linestyle="none",
                label="full FT",
            )
        first = lora[lora["dataset"] == dataset].iloc[0]
        d_in, d_out = int(first["in_features"]), int(first["out_features"])
        break_even = d_in * d_out / (d_in + d_out)
        ax.axvline(
            d_in * d_out,
            color=THEORY_COLOR,
            linestyle=":",
            linewidth=1,
            label=f"break-even r≈{break_even:.3g}",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset)
        ax.legend(frameon=True)
    fig.tight_layout()
    return fig


def rank_alpha_heatmap(runs: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure:
    """Mean final validation loss for each rank × α (best init and lr), one panel per dataset
    and scaling rule; colour on a log scale."""
    lora = analysis.completed(runs[runs["method"] == "lora"])
    if lora.empty:
        return _no_data("no completed LoRA runs")
    best = analysis.best_lora_settings(runs, ["dataset", "scaling", "rank", "alpha"])
    panels = [
        (dataset, scaling)
        for dataset in sorted(best["dataset"].unique())
        for scaling in _ordered_scalings(best.loc[best["dataset"] == dataset, "scaling"])
    ]
    fig, axes = _panels(1, len(panels))
    for j, (dataset, scaling) in enumerate(panels):
        ax = axes[0, j]
        grid = best[(best["dataset"] == dataset) & (best["scaling"] == scaling)].pivot(
            index="rank", columns="alpha", values="mean"
        )
        sns.heatmap(
            np.log10(grid),
            ax=ax,
            annot=grid.map(lambda v: f"{v:.3g}"),
            fmt="",
            annot_kws={"fontsize": 5},
            cmap="viridis_r",
            cbar_kws={"label": "log₁₀ final val MSE"},
        )
        ax.set_xticklabels([f"{float(t.get_text()):g}" for t in ax.get_xticklabels()])
        ax.set_xlabel("α")
        ax.set_ylabel("rank r")
        ax.set_title(f"{dataset} · {_scaling_label(scaling)}")
    fig.tight_layout()
    return fig


def _ordered_scalings(values) -> list[str]:
    present = set(values.dropna())
    return [s for s in SCALINGS if s in present]


def _scaling_label(scaling: str) -> str:
    return {"standard": "α/r", "rslora": "α/√r", "constant": "α"}.get(scaling, scaling)


FIGURES: dict[str, Callable[[pd.DataFrame, pd.DataFrame], plt.Figure]] = {
    "learning_curves": learning_curves,
    "loss_vs_rank": loss_vs_rank,
    "loss_vs_params": loss_vs_params,
    "rank_alpha_heatmap": rank_alpha_heatmap,
}


assert tuple(FIGURES) == FIGURE_NAMES, "lorasweep.choices.FIGURES is out of date"


def make_figure(name: str, runs: pd.DataFrame, epochs: pd.DataFrame, pdf: str, png: str) -> None:
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    set_style()
    save_figure(FIGURES[name](runs, epochs), pdf, png)
