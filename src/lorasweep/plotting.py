"""Paper-style figures from the run tables.

Every figure shows the mean over seeds with ± one standard deviation where there are several
seeds, uses a colour-blind-safe palette, is sized for one column (3.4 in) per panel, and is saved
as PDF and PNG with fixed metadata so reruns produce identical bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
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
from lorasweep.choices import INITS, SCALINGS  # noqa: E402
from lorasweep.io import write_bytes  # noqa: E402


@dataclass
class Tables:
    """The tables a figure is drawn from; ``geometry`` and ``pairs`` only for the figures that
    need saved adapters (see :data:`lorasweep.choices.GEOMETRY_FIGURES`)."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    geometry: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None


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


def _mean_sd(frame: pd.DataFrame, by: str, column: str) -> pd.DataFrame:
    """Mean and sample sd (0 for a single value) of ``column`` for each value of ``by``."""
    return frame.groupby(by)[column].agg(["mean", "std"]).fillna(0.0)


def _errorbar(ax, x, mean, sd, color, label, size: float = 3, **kwargs) -> None:
    """Mean ± sd markers joined by a line, in the figures' common style."""
    ax.errorbar(x, mean, yerr=sd, marker="o", markersize=size, capsize=2 * size / 3,
                color=color, label=label, **kwargs)  # fmt: skip


def _errorbar_by(ax, frame: pd.DataFrame, by: str, column: str, color, label, **kwargs) -> None:
    """:func:`_errorbar` of ``column``'s mean ± sd for each value of ``by``."""
    stats = _mean_sd(frame, by, column)
    _errorbar(ax, stats.index, stats["mean"], stats["std"], color, label, **kwargs)


def _log_axes(ax, xlabel: str, ylabel: str, title: str, x_base: int = 2, legend=True) -> None:
    """Log-log axes (x in powers of ``x_base``) with labels, title and a framed legend."""
    ax.set_xscale("log", base=x_base)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(frameon=True)


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


def learning_curves(t: Tables) -> plt.Figure:
    """Validation loss per epoch for each rank (best settings per rank), one panel per dataset
    and scaling rule, with the best full fine-tuning curve and the noise floor."""
    runs, epochs = t.runs, t.epochs
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
                stats = _mean_sd(group, "epoch", "val_loss")
                _band(ax, stats.index, stats["mean"], stats["std"], colors[int(rank)], f"r={rank}")
            full = full_curves[full_curves["dataset"] == dataset]
            if not full.empty:
                stats = _mean_sd(full, "epoch", "val_loss")
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


def loss_vs_rank(t: Tables) -> plt.Figure:
    """Final validation loss against rank per scaling rule (best other settings), with the
    Eckart–Young optimum for each rank, the noise floor, and full FT as a mean ± sd band."""
    runs = t.runs
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
            _errorbar(
                ax,
                group["rank"],
                group["mean"],
                group["std"],
                palette[scaling],
                _scaling_label(scaling),
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
        _log_axes(ax, "LoRA rank r", "final validation MSE", dataset)
    fig.tight_layout()
    return fig


def loss_vs_params(t: Tables) -> plt.Figure:
    """Final validation loss against trainable parameters (log x): LoRA at each rank (best
    settings) and full FT, with the break-even rank r = d_in·d_out/(d_in + d_out) marked."""
    runs = t.runs
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
        _errorbar(ax, group["params"], group["mean"], group["std"], color, "LoRA")
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


def rank_alpha_heatmap(t: Tables) -> plt.Figure:
    """Mean final validation loss for each rank × α (best init and lr), one panel per dataset
    and scaling rule; colour on a log scale."""
    runs = t.runs
    lora = analysis.completed(runs[runs["method"] == "lora"])
    if lora.empty:
        return _no_data("no completed LoRA runs")
    best = analysis.best_lora_settings(runs, ["dataset", "scaling", "rank", "alpha"])
    panels = _dataset_scaling_panels(best)
    fig, axes = _panels(1, len(panels))
    for j, (dataset, scaling) in enumerate(panels):
        ax = axes[0, j]
        grid = best[(best["dataset"] == dataset) & (best["scaling"] == scaling)].pivot(
            index="rank", columns="alpha", values="mean"
        )
        _heatmap(ax, grid, cbar_kws={"label": "log₁₀ final val MSE"})
        ax.set_xlabel("α")
        ax.set_ylabel("rank r")
        ax.set_title(f"{dataset} · {_scaling_label(scaling)}")
    fig.tight_layout()
    return fig


LINE_STYLES = ["-", "--", ":", "-."]


def grad_norm_vs_rank(t: Tables) -> plt.Figure:
    """Mean gradient norm of A and of B during the first epoch against rank, per scaling rule
    (colour) and α (line style), at one init and learning rate."""
    lora = analysis.completed(t.runs[t.runs["method"] == "lora"])
    if lora.empty:
        return _no_data("no completed LoRA runs")
    lora = analysis.reference_slice(lora, vary=["rank", "scaling", "alpha"])
    lora = analysis.where_varies(lora, ["dataset", "scaling", "alpha"], "rank")
    if lora.empty:
        return _no_data("fewer than two ranks")
    first = t.epochs[t.epochs["epoch"] == 1].merge(lora, on="run_id")
    alphas = sorted(first["alpha"].unique())
    style_of = {a: LINE_STYLES[k % len(LINE_STYLES)] for k, a in enumerate(alphas)}
    datasets = sorted(first["dataset"].unique())
    fig, axes = _panels(len(datasets), 2)
    palette = dict(zip(SCALINGS, sns.color_palette("colorblind"), strict=False))
    for i, dataset in enumerate(datasets):
        panel = first[first["dataset"] == dataset]
        for j, column in enumerate(("grad_norm_A", "grad_norm_B")):
            ax = axes[i, j]
            for scaling in _ordered_scalings(panel["scaling"]):
                for alpha in sorted(panel["alpha"].unique()):
                    group = panel[(panel["scaling"] == scaling) & (panel["alpha"] == alpha)]
                    if group.empty:
                        continue
                    _errorbar_by(
                        ax,
                        group,
                        "rank",
                        column,
                        palette[scaling],
                        f"{_scaling_label(scaling)}, α={alpha:g}",
                        size=2.5,
                        linestyle=style_of[alpha],
                    )
            _log_axes(
                ax,
                "LoRA rank r",
                f"mean ‖∇{column[-1]}‖_F, epoch 1",
                f"{dataset} · gradient of {column[-1]}",
                legend=False,
            )
    axes[0, -1].legend(frameon=True, ncol=1)
    fig.tight_layout()
    return fig


def _heatmap(ax, grid: pd.DataFrame, fmt=lambda v: f"{v:.3g}", log=True, **kwargs) -> None:
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
    ax.set_xticklabels([_tick(t.get_text()) for t in ax.get_xticklabels()])
    ax.set_yticklabels([_tick(t.get_text()) for t in ax.get_yticklabels()], rotation=0)


def _tick(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def alpha_lr_heatmap(t: Tables) -> plt.Figure:
    """Mean final validation loss for each α × learning rate at one rank, per dataset and
    scaling rule. Under Adam, the adapter's step is about s·lr, so equal-loss cells should lie
    along diagonals if tuning α is like tuning the learning rate."""
    lora = analysis.completed(t.runs[t.runs["method"] == "lora"])
    lora = analysis.reference_slice(lora, vary=["alpha", "lr", "scaling"])
    lora = analysis.where_varies(lora, ["dataset", "scaling"], "alpha")
    lora = analysis.where_varies(lora, ["dataset", "scaling"], "lr")
    if lora.empty:
        return _no_data("no α × lr grid")
    stats = analysis.seed_stats(lora, ["dataset", "scaling", "rank", "alpha", "lr"])
    panels = _dataset_scaling_panels(stats)
    fig, axes = _panels(1, len(panels))
    for j, (dataset, scaling) in enumerate(panels):
        cell = stats[(stats["dataset"] == dataset) & (stats["scaling"] == scaling)]
        grid = cell.pivot(index="alpha", columns="lr", values="mean").sort_index(ascending=False)
        _heatmap(axes[0, j], grid, cbar_kws={"label": "log₁₀ final val MSE"})
        axes[0, j].set_xlabel("learning rate")
        axes[0, j].set_ylabel("α")
        axes[0, j].set_title(
            f"{dataset} · {_scaling_label(scaling)} · r={int(cell['rank'].iloc[0])}"
        )
    fig.tight_layout()
    return fig


def subspace_similarity(t: Tables) -> plt.Figure:
    """φ(A_low, A_high, i, j) (LoRA Fig. 3), φ between two seeds at one rank (Fig. 4), and the
    similarity of the learned update's top directions to the true ΔW*'s against rank."""
    pairs = t.pairs if t.pairs is not None else pd.DataFrame()
    panels = []
    for kind in ("rank", "seed"):
        part = pairs[pairs["comparison"] == kind] if not pairs.empty else pairs
        if not part.empty:
            panels.append((kind, part))
    truth = (
        t.geometry.merge(analysis.completed(t.runs), on="run_id")
        if t.geometry is not None
        else None
    )
    has_truth = truth is not None and truth["phi_true_right"].notna().any()
    n = len(panels) + int(has_truth)
    if n == 0:
        return _no_data("no adapters to compare")
    fig, axes = _panels(1, n)
    for j, (kind, part) in enumerate(panels):
        dataset = sorted(part["dataset"].unique())[0]
        part = part[part["dataset"] == dataset]
        grid = part.groupby(["i", "j"])["phi"].mean().unstack()
        _heatmap(
            axes[0, j], grid, fmt=lambda v: "", log=False, vmin=0, vmax=1, cbar_kws={"label": "φ"}
        )
        axes[0, j].invert_yaxis()
        first = part.iloc[0]
        if kind == "rank":
            seeds = part["seed_a"].nunique()
            title = f"φ(A_r={first['rank_a']}, A_r={first['rank_b']}), mean of {seeds} seed(s)"
            axes[0, j].set_xlabel(f"j (top-j directions of A_r={first['rank_b']})")
            axes[0, j].set_ylabel(f"i (top-i directions of A_r={first['rank_a']})")
        else:
            title = f"φ across seeds {first['seed_a']} and {first['seed_b']}, r={first['rank_a']}"
            axes[0, j].set_xlabel(f"j (seed {first['seed_b']})")
            axes[0, j].set_ylabel(f"i (seed {first['seed_a']})")
        axes[0, j].set_title(f"{dataset} · {title}")
        step = max(1, grid.shape[1] // 8)
        axes[0, j].set_xticks(
            np.arange(0, grid.shape[1], step) + 0.5, [str(v) for v in grid.columns[::step]]
        )
    if has_truth:
        ax = axes[0, -1]
        lora = truth[truth["method"] == "lora"]
        palette = sns.color_palette("colorblind")
        for k, (column, label) in enumerate(
            (
                ("phi_true_right", "input (right) subspace"),
                ("phi_true_left", "output (left) subspace"),
            )
        ):
            for m, dataset in enumerate(sorted(lora["dataset"].unique())):
                _errorbar_by(
                    ax,
                    lora[lora["dataset"] == dataset],
                    "rank",
                    column,
                    palette[k],
                    f"{label}, {dataset}",
                    size=2.5,
                    linestyle=["-", "--", ":"][m % 3],
                )
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("LoRA rank r")
        ax.set_ylabel("φ(learned top-min(r,k), true ΔW*)")
        ax.set_title("similarity to the true subspace")
        ax.legend(frameon=True)
    fig.tight_layout()
    return fig


def amplification(t: Tables) -> plt.Figure:
    """Amplification factor ‖ΔW‖_F / ‖UᵀW₀V‖_F of the learned update against rank, per scaling
    rule (other settings fixed, mean ± sd over seeds), with full fine-tuning's at r = rank(ΔW*)."""
    if t.geometry is None or t.geometry.empty:
        return _no_data("no adapters")
    data = t.geometry.merge(analysis.completed(t.runs), on="run_id")
    lora = analysis.reference_slice(data[data["method"] == "lora"], vary=["rank", "scaling"])
    datasets = sorted(lora["dataset"].unique())
    fig, axes = _panels(1, len(datasets))
    palette = dict(zip(SCALINGS, sns.color_palette("colorblind"), strict=False))
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        panel = lora[lora["dataset"] == dataset]
        for scaling in _ordered_scalings(panel["scaling"]):
            _errorbar_by(
                ax,
                panel[panel["scaling"] == scaling],
                "rank",
                "amplification",
                palette[scaling],
                _scaling_label(scaling),
            )
        full = data[(data["method"] == "full") & (data["dataset"] == dataset)]["amplification"]
        if not full.empty:
            ax.axhline(
                full.mean(),
                color=FULL_COLOR,
                linestyle="--",
                linewidth=1,
                label="full FT (r = rank ΔW*)",
            )
        _log_axes(ax, "LoRA rank r", "amplification ‖ΔW‖ / ‖UᵀW₀V‖", dataset)
    fig.tight_layout()
    return fig


def init_comparison(t: Tables) -> plt.Figure:
    """Validation loss per epoch for each initialisation (best other settings, at the rank
    where most inits were run), and the loss at epoch 0, before any step."""
    lora = analysis.completed(t.runs[t.runs["method"] == "lora"])
    lora = analysis.where_varies(analysis.reference_slice(lora, vary=["init"]), ["dataset"], "init")
    if lora.empty:
        return _no_data("fewer than two inits")
    best = analysis.best_lora_settings(lora, ["dataset", "rank", "init"])
    chosen = analysis.select_runs(lora, best, ["dataset", "rank", *analysis.LORA_SETTINGS])
    curves = t.epochs.merge(chosen[["run_id", "dataset", "init"]], on="run_id")
    datasets = sorted(chosen["dataset"].unique())
    fig, axes = _panels(len(datasets), 2)
    palette = dict(zip(INITS, sns.color_palette("colorblind"), strict=False))
    for i, dataset in enumerate(datasets):
        ax, bar_ax = axes[i, 0], axes[i, 1]
        panel = curves[curves["dataset"] == dataset]
        starts = []
        for init in [x for x in INITS if x in set(panel["init"])]:
            group = panel[panel["init"] == init]
            stats = _mean_sd(group, "epoch", "val_loss")
            _band(ax, stats.index, stats["mean"], stats["std"], palette[init], init)
            start = group[group["epoch"] == 0]["val_loss"]
            starts.append((init, start.mean(), start.std(ddof=1) if len(start) > 1 else 0.0))
        floor = _noise_floor(t.runs, dataset)
        for axis in (ax, bar_ax):
            if floor:
                axis.axhline(floor, color=THEORY_COLOR, linestyle=":", linewidth=1, label="σ²")
            axis.set_yscale("log")
        rank = int(chosen.loc[chosen["dataset"] == dataset, "rank"].iloc[0])
        ax.set_title(f"{dataset} · r={rank}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MSE")
        ax.legend(frameon=True)
        names = [s[0] for s in starts]
        bar_ax.bar(
            names,
            [s[1] for s in starts],
            yerr=[s[2] for s in starts],
            color=[palette[n] for n in names],
            capsize=2,
        )
        bar_ax.set_title(f"{dataset} · loss before training (epoch 0)")
        bar_ax.set_ylabel("validation MSE at epoch 0")
    fig.tight_layout()
    return fig


def lora_plus(t: Tables) -> plt.Figure:
    """Final validation loss against LoRA+'s ratio λ = lr_B / lr_A (log x), one line per rank."""
    lora = analysis.completed(t.runs[t.runs["method"] == "lora"])
    lora = analysis.reference_slice(lora, vary=["lr_ratio", "rank"])
    lora = analysis.where_varies(lora, ["dataset", "rank"], "lr_ratio")
    if lora.empty:
        return _no_data("fewer than two λ")
    stats = analysis.seed_stats(lora, ["dataset", "rank", "lr_ratio"])
    datasets = sorted(stats["dataset"].unique())
    fig, axes = _panels(1, len(datasets))
    colors = _rank_colors(stats["rank"].unique())
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        for rank, group in stats[stats["dataset"] == dataset].groupby("rank"):
            _errorbar(
                ax, group["lr_ratio"], group["mean"], group["std"], colors[int(rank)], f"r={rank}"
            )
        _log_axes(ax, "λ = lr(B) / lr(A)", "final validation MSE", dataset)
    fig.tight_layout()
    return fig


def task_rank_knee(t: Tables) -> plt.Figure:
    """Final validation loss over the noise floor against rank, one colour per dataset's task
    rank k, with the rank-r optimum (dashed) and the expected knee at r = k (dotted)."""
    lora = analysis.completed(t.runs[(t.runs["method"] == "lora")])
    lora = lora[lora["dataset_kind"] == "lowrank"]
    if lora.empty:
        return _no_data("no lowrank datasets")
    best = analysis.best_lora_settings(lora, ["dataset", "rank"])
    meta = lora.groupby("dataset")[["task_rank", "noise_floor"]].first()
    fig, axes = _panels(1, 1)
    ax = axes[0, 0]
    datasets = sorted(meta.index, key=lambda d: (meta.loc[d, "task_rank"], d))
    palette = sns.color_palette("colorblind", n_colors=len(datasets))
    for color, dataset in zip(palette, datasets, strict=True):
        k, floor = int(meta.loc[dataset, "task_rank"]), float(meta.loc[dataset, "noise_floor"])
        group = best[best["dataset"] == dataset]
        _errorbar(
            ax,
            group["rank"],
            group["mean"] / floor,
            group["std"] / floor,
            color,
            f"k={k} ({dataset})",
        )
        optimum = lora[lora["dataset"] == dataset].groupby("rank")["optimal_val_loss"].first()
        ax.plot(optimum.index, optimum.values / floor, color=color, linestyle="--", linewidth=0.8)
        ax.axvline(k, color=color, linestyle=":", linewidth=1)
    _log_axes(ax, "LoRA rank r", "final validation MSE / σ²", "knee at r = task rank k")
    fig.tight_layout()
    return fig


def _dataset_scaling_panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, scaling rule) pairs present in ``frame``, datasets sorted, rules in order."""
    return [
        (dataset, scaling)
        for dataset in sorted(frame["dataset"].unique())
        for scaling in _ordered_scalings(frame.loc[frame["dataset"] == dataset, "scaling"])
    ]


def _ordered_scalings(values) -> list[str]:
    present = set(values.dropna())
    return [s for s in SCALINGS if s in present]


def _scaling_label(scaling: str) -> str:
    return {"standard": "α/r", "rslora": "α/√r", "constant": "α"}.get(scaling, scaling)


FIGURES: dict[str, Callable[[Tables], plt.Figure]] = {
    "loss_vs_params": loss_vs_params,
    "learning_curves": learning_curves,
    "loss_vs_rank": loss_vs_rank,
    "grad_norm_vs_rank": grad_norm_vs_rank,
    "rank_alpha_heatmap": rank_alpha_heatmap,
    "alpha_lr_heatmap": alpha_lr_heatmap,
    "subspace_similarity": subspace_similarity,
    "amplification": amplification,
    "init_comparison": init_comparison,
    "lora_plus": lora_plus,
    "task_rank_knee": task_rank_knee,
}

assert tuple(FIGURES) == FIGURE_NAMES, "lorasweep.choices.FIGURES is out of date"


def make_figure(name: str, tables: Tables, pdf: str | Path, png: str | Path) -> None:
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    set_style()
    save_figure(FIGURES[name](tables), pdf, png)
