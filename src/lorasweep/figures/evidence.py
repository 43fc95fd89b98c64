"""The newer evidence: loss against learning rate (LoRA Without Regret, Fig. 2), forgetting
against learning (Biderman et al. 2024, Fig. 4), and intruder dimensions against rank
(Shuttleworth et al. 2024)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.transforms as transforms
import numpy as np
import pandas as pd
import seaborn as sns

from lorasweep.analysis import forgetting, statistics
from lorasweep.figures.registry import (
    Tables,
    all_of,
    figure,
    has_source_task,
    lr_swept,
    varies,
)
from lorasweep.figures.style import (
    FULL_COLOR,
    SCALING_COLORS,
    THEORY_COLOR,
    datasets_of,
    errorbar,
    errorbar_by,
    legend_outside,
    matching,
    method_parts,
    natural_sorted,
    no_data,
    ordered_scalings,
    panel_grid,
    rank_colors,
    scaling_label,
    subplot_grid,
)
from lorasweep.models import registry

GAP_COLORS = sns.color_palette("colorblind")[1:4]

SETTINGS_HELD = ("scaling", "alpha", "init", "lr_ratio", "dropout", "bias", "targets")
"""The settings besides rank that single out one curve's row of ``lr_optima.csv``."""


def _mark_optima(ax, optima: pd.DataFrame, color) -> None:
    """Small triangles along the top of the panel at the mean curve's interpolated optimum."""
    where = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for row in optima.itertuples():
        fill = "none" if row.at_edge else "full"
        ax.plot([row.optimal_lr], [0.97], marker="v", markersize=4, color=color,
                transform=where, clip_on=False, fillstyle=fill)  # fmt: skip


def _mean_optima(optima: pd.DataFrame | None, **match) -> pd.DataFrame:
    """Rows of ``lr_optima.csv`` for mean-over-seeds curves whose columns equal ``match`` (an
    empty value matching an empty one)."""
    if optima is None or optima.empty:
        return pd.DataFrame(columns=["optimal_lr", "at_edge"])
    return matching(optima[optima["seed"].isna()], **match)


@figure(tables=("runs", "epochs", "lr_optima"), when=lr_swept)
def loss_vs_learning_rate(t: Tables) -> plt.Figure:
    """Final validation loss against learning rate (log x), one curve per rank and one for
    full FT, mean ± sd over seeds, per scaling rule; triangles mark each curve's optimum."""
    runs = statistics.completed(t.runs)
    lora = statistics.reference_slice(
        runs[registry.factor_rows(runs["method"])], vary=["rank", "lr", "scaling"]
    )
    lora = statistics.where_varies(lora, ["dataset", "scaling", "rank"], "lr")
    full = statistics.where_varies(runs[registry.full_rows(runs["method"])], ["dataset"], "lr")
    datasets = natural_sorted(set(lora["dataset"]) | set(full["dataset"]))
    if not datasets:
        return no_data("no curve has two learning rates")
    scalings = ordered_scalings(lora["scaling"]) or [None]
    colors = rank_colors(lora["rank"].dropna().unique())
    fig, axes = subplot_grid(len(datasets), len(scalings), sharey="row")
    optima_columns = set(t.lr_optima.columns) if t.lr_optima is not None else set()
    for i, dataset in enumerate(datasets):
        for j, scaling in enumerate(scalings):
            ax = axes[i, j]
            panel = lora[(lora["dataset"] == dataset) & (lora["scaling"] == scaling)]
            for rank, group in panel.groupby("rank", sort=True):
                errorbar_by(ax, group, "lr", "final_val_loss", colors[int(rank)], f"r={rank}")
                first = group.iloc[0]
                held = {c: first[c] for c in SETTINGS_HELD if c in group and c in optima_columns}
                curve = _mean_optima(t.lr_optima, dataset=dataset, method="lora", rank=rank,
                                     **held)  # fmt: skip
                _mark_optima(ax, curve, colors[int(rank)])
            ours = full[full["dataset"] == dataset]
            if not ours.empty:
                errorbar_by(ax, ours, "lr", "final_val_loss", FULL_COLOR, "full FT", linestyle="--")
                _mark_optima(ax, _mean_optima(t.lr_optima, dataset=dataset, method="full"),
                             FULL_COLOR)  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("learning rate")
            if j == 0:
                ax.set_ylabel("final validation MSE")
            title = dataset if scaling is None else f"{dataset} · {scaling_label(scaling)}"
            ax.set_title(title)
    legend_outside(fig, axes)
    return fig


def _label_of(adapters: pd.DataFrame) -> str:
    """The label of the adapter method of ``adapters`` (rows of one method)."""
    return registry.method(adapters["method"].iloc[0]).label


def _frontier_panel(ax, points: pd.DataFrame, colors: dict) -> None:
    """Every checkpoint (dots) and each method's frontier F(L) (steps): LoRA per rank (each
    adapter method apart, in its own line style, where several ran), full FT dashed."""
    adapters = points[registry.factor_rows(points["method"])]
    for _, style, part in method_parts(adapters):
        name = _label_of(part)
        for rank, group in part.groupby("rank", sort=True):
            color = colors[int(rank)]
            ax.scatter(group["val_loss"], group["forgetting"], s=3, color=color, alpha=0.25,
                       lw=0)  # fmt: skip
            steps = forgetting.frontier(group)
            ax.step(steps["val_loss"], steps["forgetting"], where="post", color=color,
                    label=f"{name} r={rank}", **style)  # fmt: skip
    full = points[registry.full_rows(points["method"])]
    if not full.empty:
        ax.scatter(full["val_loss"], full["forgetting"], s=3, color=FULL_COLOR, alpha=0.25, lw=0)
        steps = forgetting.frontier(full)
        ax.step(steps["val_loss"], steps["forgetting"], where="post", color=FULL_COLOR,
                linestyle="--", label="full FT")  # fmt: skip


@figure(when=has_source_task)
def forgetting_vs_learning(t: Tables) -> plt.Figure:
    """Source-task forgetting against target validation loss at every epoch and learning rate
    (seed means), with each method's least forgetting at a given target loss (Biderman Fig. 4)."""
    points = forgetting.checkpoints(t.runs, t.epochs)
    if points.empty:
        return no_data("no dataset with a source task")
    datasets = datasets_of(points)
    colors = rank_colors(points["rank"].dropna().unique())
    fig, axes = panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = points[points["dataset"] == dataset]
        _frontier_panel(ax, panel, colors)
        floor = statistics.noise_floor(t.runs, dataset) or 1e-4
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=floor / 100)
        start = t.runs.loc[t.runs["dataset"] == dataset, "initial_val_loss"].max()
        ax.set_xlim(panel["val_loss"].min() / 1.2, 1.2 * start)
        ax.set_ylim(bottom=min(0.0, 1.2 * panel["forgetting"].min()))
        ax.axhline(0, color=THEORY_COLOR, linewidth=0.6)
        ax.set_xlabel("target validation MSE (learned more ←)")
        ax.set_ylabel("forgetting: source MSE − before")
        ax.set_title(dataset)
    legend_outside(fig, axes)
    return fig


@figure(tables=("runs", "epochs", "intruders", "intruder_means"), when=varies("rank"))
def intruders_vs_rank(t: Tables) -> plt.Figure:
    """Intruder dimensions among the top 10 singular vectors of W₀ + ΔW against rank, one panel
    per ε: LoRA under α/r and α/√r (best settings per rank, mean ± sd over seeds) with its null
    control dotted, full FT as a band and the true W₀ + ΔW* dotted (``intruder_means.csv``)."""
    if t.intruders is None or t.intruders.empty or t.intruder_means is None:
        return no_data("no intruder counts")
    runs = statistics.completed(t.runs)
    datasets = datasets_of(runs[registry.factor_rows(runs["method"])])
    epsilons = sorted(t.intruders["epsilon"].unique())
    if not datasets:
        return no_data("no completed LoRA runs")
    fig, axes = subplot_grid(len(datasets), len(epsilons), sharey=True)
    for j, epsilon in enumerate(epsilons):
        means = t.intruder_means[np.isclose(t.intruder_means["epsilon"], epsilon)]
        for i, dataset in enumerate(datasets):
            ax = axes[i, j]
            _intruder_panel(ax, means[means["dataset"] == dataset])
            truth = _truth_count(t.intruders, dataset, epsilon)
            if truth is not None:
                ax.axhline(truth, color=THEORY_COLOR, linestyle=":", linewidth=1,
                           label="true W₀ + ΔW*")  # fmt: skip
            top_k = int(t.intruders["top_k"].max())
            ax.set_ylim(-0.3, top_k + 0.3)
            if j == 0:
                ax.set_ylabel(f"intruders among the top {top_k}")
            ax.set_title(f"{dataset} · ε = {epsilon:g}")
    legend_outside(fig, axes)
    return fig


def _intruder_panel(ax, means: pd.DataFrame) -> None:
    """LoRA's counts against rank per scaling rule (each adapter method apart, in its own line
    style, where several ran), and full FT's mean ± sd as a band."""
    for prefix, style, part in method_parts(means[registry.factor_rows(means["method"])]):
        for scaling in ordered_scalings(part["scaling"]):
            group = part[part["scaling"] == scaling].sort_values("rank")
            errorbar(ax, group["rank"], group["mean"], group["std"], SCALING_COLORS[scaling],
                     f"{_label_of(group)}, {scaling_label(scaling)}", **style)  # fmt: skip
            ax.plot(group["rank"], group["null_mean"], color=SCALING_COLORS[scaling],
                    linestyle=":", linewidth=1,
                    label=f"null control, {prefix}{scaling_label(scaling)}")  # fmt: skip
    full = means[registry.full_rows(means["method"])]
    if not full.empty:
        mean, sd = float(full["mean"].iloc[0]), float(full["std"].iloc[0])
        ax.axhline(mean, color=FULL_COLOR, linestyle="--", linewidth=1, label="full FT")
        ax.axhspan(mean - sd, mean + sd, color=FULL_COLOR, alpha=0.12, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank r")


def _truth_count(intruders: pd.DataFrame, dataset: str, epsilon: float) -> float | None:
    rows = intruders[
        intruders["run_id"].isna()
        & (intruders["dataset"] == dataset)
        & np.isclose(intruders["epsilon"], epsilon)
    ]
    return float(rows["intruders"].mean()) if not rows.empty else None


GAP_PARTS = {"optimisation": "optimisation", "approximation": "approximation (rank r)",
             "estimation": "estimation (n samples)"}  # fmt: skip


def has_lowrank(config: dict) -> bool:
    """Some dataset is a single-layer ``lowrank`` task, which has oracles and a population risk."""
    return any(d["kind"] == "lowrank" for d in config["datasets"])


@figure(tables=("runs", "epochs", "gaps"), when=all_of(has_lowrank, varies("rank")))
def gap_decomposition(t: Tables) -> plt.Figure:
    """The excess population risk of the best run at each LoRA rank, split into optimisation,
    approximation and estimation (``gaps.csv``, means over replicates, in units of σ²; each
    adapter method apart, in its own line style, where several ran), with
    full FT's total as a dashed line. A noise-free dataset (σ² = 0) is left out, as is one whose
    LoRA runs all diverged."""
    gaps = t.gaps
    if gaps is None or gaps.empty:
        return no_data("no single-layer lowrank dataset with oracles")
    gaps = gaps[gaps["noise_floor"] > 0]
    with_lora = gaps.loc[registry.factor_rows(gaps["method"]), "dataset"].unique()
    gaps = gaps[gaps["dataset"].isin(with_lora)]
    if gaps.empty:
        return no_data("no noisy lowrank dataset with a completed LoRA run (gaps are in σ²)")
    datasets = datasets_of(gaps)
    fig, axes = panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = gaps[gaps["dataset"] == dataset]
        scaled = panel.assign(
            **{c: panel[c] / panel["noise_floor"] for c in [*GAP_PARTS, "total_gap"]}
        )
        adapters = scaled[registry.factor_rows(scaled["method"])]
        for prefix, style, part in method_parts(adapters):
            lora = part.groupby("rank").mean(numeric_only=True)
            for (column, label), color in zip(GAP_PARTS.items(), GAP_COLORS, strict=True):
                ax.plot(lora.index, lora[column], marker="o", markersize=3, color=color,
                        label=f"{prefix}{label}", **style)  # fmt: skip
            ax.plot(lora.index, lora["total_gap"], color=FULL_COLOR, marker="s", markersize=3,
                    label=f"total, {_label_of(part)}", **style)  # fmt: skip
        full = scaled[registry.full_rows(scaled["method"])]
        if not full.empty:
            ax.axhline(full["total_gap"].mean(), color=FULL_COLOR, linestyle="--", linewidth=1,
                       label="total, full FT")  # fmt: skip
        ax.axhline(0, color=THEORY_COLOR, linewidth=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel("LoRA rank r")
        ax.set_ylabel("excess population risk / σ²")
        ax.set_title(dataset)
    legend_outside(fig, axes)
    return fig
