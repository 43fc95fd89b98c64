"""The method comparison's figures: test loss against trainable parameters with the Pareto
front, and each method's validation loss against its learning rate. Both read
``methods.csv`` (:mod:`lorasweep.analysis.methods`), so each arm is drawn at the setting the
table chose on validation."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from lorasweep.analysis import statistics
from lorasweep.figures.registry import figure
from lorasweep.figures.style import (
    FULL_COLOR,
    METHOD_COLORS,
    SMALL,
    THEORY_COLOR,
    datasets_of,
    legend_outside,
    log_ticks,
    no_data,
    panel_grid,
    pareto_mask,
)
from lorasweep.models import registry
from lorasweep.planning.runs import grids

METHOD_TABLES = ("runs", "epochs", "methods")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "8")
"""One marker per adapter method, in the registry's order (with :data:`METHOD_COLORS`)."""
_MARKER = {m.name: MARKERS[i] for i, m in enumerate(r for r in registry.METHOD_RECORDS
                                                     if r.adapter)}  # fmt: skip


def compares_methods(config: dict) -> bool:
    """Some grid block names several adapter methods, or one trained through PEFT."""
    names = {name for block in grids(config) for name in block["method"]}
    return len(names) > 1 or any(registry.method(n).through_peft for n in names)


def _look(method: str) -> dict:
    if registry.is_full(method):
        return {"color": FULL_COLOR, "marker": "*", "markersize": 8}
    return {"color": METHOD_COLORS[method], "marker": _MARKER[method], "markersize": 4}


def pareto_arms(table: pd.DataFrame) -> pd.DataFrame:
    """``table``'s arms with ``front`` set where no arm of the dataset with at most as many
    trainable parameters has a lower test loss."""
    table = table.dropna(subset=["test_loss", "trainable_params"]).copy()
    table["front"] = pareto_mask(table, "trainable_params", "test_loss")
    return table


@figure(tables=METHOD_TABLES, when=compares_methods)
def method_pareto(t) -> plt.Figure:
    """Test MSE (95 % interval over units) against trainable parameters, one point per arm at
    its own best setting and learning rate, and the Pareto front."""
    arms = pareto_arms(t.methods) if t.methods is not None else pd.DataFrame()
    if arms.empty:
        return no_data("no completed arms")
    datasets = datasets_of(arms)
    fig, axes = panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = arms[arms["dataset"] == dataset]
        for _, row in panel.iterrows():
            low = row["test_loss"] - row["test_ci_low"] if pd.notna(row["test_ci_low"]) else 0
            high = row["test_ci_high"] - row["test_loss"] if pd.notna(row["test_ci_high"]) else 0
            look = _look(row["method"])
            ax.errorbar(row["trainable_params"], row["test_loss"], yerr=[[low], [high]],
                        linestyle="none", capsize=1.5, alpha=0.85, **look)  # fmt: skip
        front = panel[panel["front"]].sort_values("trainable_params")
        ax.plot(front["trainable_params"], front["test_loss"], drawstyle="steps-post",
                color=THEORY_COLOR, linewidth=1, zorder=0)  # fmt: skip
        floor = panel["noise_floor"].dropna()
        if len(floor) and floor.iloc[0] > 0:
            ax.axhline(floor.iloc[0], color=THEORY_COLOR, linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks(ax)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("test MSE")
        ax.set_title(dataset)
    legend_outside(fig, handles=_handles(arms["method"], floor=True))
    return fig


def _handles(methods: pd.Series, floor: bool = False) -> list:
    present = set(methods.dropna())
    handles = [
        Line2D([], [], linestyle="none", label=m.label, **_look(m.name))
        for m in registry.METHOD_RECORDS
        if m.name in present
    ]
    handles.append(Line2D([], [], color=THEORY_COLOR, label="Pareto front"))
    if floor:
        handles.append(Line2D([], [], color=THEORY_COLOR, linestyle=":", label="noise floor σ²"))
    return handles


def lr_curves(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, method and learning rate: the mean final validation loss over units of the
    arm the method table reports at its lowest test loss (one budget per method), at every
    learning rate that arm searched with its other chosen settings."""
    done = statistics.completed(runs)
    rows = []
    for (dataset, method), group in table.groupby(["dataset", "method"]):
        arm = group.sort_values("test_loss").iloc[0]
        keys = {k: arm[k] for k in ("rank", "targets", "alpha", "scaling", "init") if k in done}
        part = done[(done["dataset"] == dataset) & (done["method"] == method)]
        for key, value in keys.items():
            part = part[part[key].isna()] if pd.isna(value) else part[part[key] == value]
        means = part.groupby("lr")["final_val_loss"].mean()
        rows += [{"dataset": dataset, "method": method, "lr": lr, "val_loss": loss,
                  "chosen": lr == arm["lr"]} for lr, loss in means.items()]  # fmt: skip
    return pd.DataFrame(rows, columns=["dataset", "method", "lr", "val_loss", "chosen"])


@figure(tables=METHOD_TABLES, when=compares_methods)
def method_lr_curves(t) -> plt.Figure:
    """Each method's final validation MSE against its learning rate (its best budget, other
    settings as chosen), the chosen rate filled."""
    curves = lr_curves(t.runs, t.methods) if t.methods is not None else pd.DataFrame()
    if curves.empty:
        return no_data("no completed arms")
    datasets = datasets_of(curves)
    fig, axes = panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        panel = curves[curves["dataset"] == dataset]
        for method, part in panel.groupby("method", sort=False):
            look = _look(method)
            ax.plot(part["lr"], part["val_loss"], color=look["color"], linewidth=0.9,
                    marker=look["marker"], markersize=3, markerfacecolor="white")  # fmt: skip
            chosen = part[part["chosen"]]
            ax.plot(chosen["lr"], chosen["val_loss"], linestyle="none", **look)
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks(ax)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final validation MSE")
        ax.set_title(dataset, fontsize=SMALL + 1)
    handles = [h for h in _handles(curves["method"]) if h.get_label() != "Pareto front"]
    legend_outside(fig, handles=handles)
    return fig
