"""The figures keep every row of hand-made tables: several target sets of a deep model are never
mixed or averaged together, single-layer runs' empty target set (and other empty settings) are
not dropped, and datasets are ordered as a reader counts (task2, task8, task32)."""

import numpy as np
import pandas as pd
import pytest

from lorasweep.analysis.selections import selections_table
from lorasweep.figures import render_figure
from lorasweep.figures.overview import pareto_points
from lorasweep.figures.registry import Tables
from lorasweep.figures.style import matching, natural_sorted

WIDTHS = {"attention": 64, "mlp": 48, "q": 16, "k": 16}
"""d_in + d_out summed over the matrices of each target set (one block, d_model 8, d_ff 16)."""


def lora_row(dataset, rank, seed, loss, targets=np.nan, kind="transformer", **settings):
    width = WIDTHS[targets] if isinstance(targets, str) else 28
    return {
        "run_id": f"{dataset}_{targets}_r{rank}_s{seed}", "dataset": dataset, "method": "lora",
        "rank": rank, "alpha": 8.0, "scaling": "standard", "init": "kaiming", "lr": 0.01,
        "lr_ratio": 1.0, "dropout": 0.0, "bias": "none", "targets": targets, "seed": seed,
        "status": "ok", "final_val_loss": loss * (1 + 0.01 * seed), "dataset_kind": kind,
        "trainable_params": rank * width, "noise_floor": 0.01, "optimal_val_loss": np.nan,
        "in_features": 16, "out_features": 12, "shifted": "attention", "task_rank": 2,
        **settings,
    }  # fmt: skip


def deep_runs() -> pd.DataFrame:
    """A transformer whose attention reaches 0.011 at r = 8 and whose MLP stays at 1.2; q and k
    have the same parameter count at r = 8 and different losses."""
    losses = {("attention", 1): 0.5, ("attention", 8): 0.011, ("mlp", 1): 1.3, ("mlp", 8): 1.2,
              ("q", 8): 0.9, ("k", 8): 0.3}  # fmt: skip
    rows = [lora_row("tf", r, s, loss, t) for (t, r), loss in losses.items() for s in (0, 1)]
    return pd.DataFrame(rows)


def single_layer_runs(datasets=("tiny",)) -> pd.DataFrame:
    """Lowrank LoRA runs, whose target set (and LoRA+ ratio, for one rank) is empty."""
    rows = [
        lora_row(d, r, s, 0.1 / r, kind="lowrank", lr_ratio=np.nan if r == 4 else 1.0, alpha=a)
        for d in datasets for r in (1, 4) for a in (2.0, 8.0) for s in (0, 1)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def draw(name: str, runs: pd.DataFrame):
    epochs = pd.DataFrame(columns=["run_id", "epoch", "val_loss", "train_loss"])
    tables = Tables(runs=runs, epochs=epochs, selections=selections_table(runs))
    return render_figure(name, tables)


def texts(fig) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_parallel_coordinates_counts_each_target_set_as_a_setting_with_its_own_axis():
    fig = draw("parallel_coordinates", deep_runs())
    ax = fig.axes[0]
    assert ax.get_title() == "tf · 6 LoRA settings"
    assert "targets" in [t.get_text() for t in ax.get_xticklabels()]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    best = min(line.get_ydata()[-1] for line in lines if line.get_ydata()[0] == 1.0)
    assert best == pytest.approx(0.0), "the rank-8 line of attention must reach the lowest loss"


def test_parallel_coordinates_keeps_settings_whose_optional_columns_are_empty():
    fig = draw("parallel_coordinates", single_layer_runs())
    assert fig.axes[0].get_title() == "tiny · 4 LoRA settings"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "targets" not in labels and "λ" in labels


def test_pareto_points_never_average_target_sets_together():
    points = pareto_points(deep_runs())
    at_r8 = points[(points["method"] == "lora") & (points["trainable_params"] == 128)]
    assert sorted(at_r8["targets"]) == ["k", "q"]
    assert sorted(at_r8["mean"].round(4)) == [0.3015, 0.9045]
    assert points["front"].sum() == 4


def test_pareto_points_keep_single_layer_rows():
    points = pareto_points(single_layer_runs())
    assert len(points) == 4 and points["targets"].isna().all()


def test_loss_vs_params_draws_one_line_per_target_set():
    labels = legend_labels(draw("loss_vs_params", deep_runs()))
    assert {"LoRA, attention", "LoRA, mlp", "LoRA, q (r=8)", "LoRA, k (r=8)"} <= set(labels)
    single = legend_labels(draw("loss_vs_params", single_layer_runs()))
    assert [label for label in single if label.startswith("LoRA")] == ["LoRA"]


@pytest.mark.parametrize(
    "name", ["loss_vs_rank", "loss_vs_params", "parallel_coordinates", "pareto_front"]
)
def test_dataset_panels_are_in_natural_order(name):
    fig = draw(name, single_layer_runs(("task32", "task8", "task2")))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split(" ")[0] for t in titles] == ["task2", "task8", "task32"]


def test_natural_sort_and_nan_safe_matching():
    assert natural_sorted(["task32", "task2", "b", "task8", "a10", "a9"]) == [
        "a9", "a10", "b", "task2", "task8", "task32"
    ]  # fmt: skip
    frame = pd.DataFrame({"targets": [np.nan, "mlp", np.nan], "rank": [1, 1, 2]})
    assert list(matching(frame, targets=np.nan, rank=1).index) == [0]
    assert list(matching(frame, targets="mlp").index) == [1]


def _gaps(noise_floor: float, methods: tuple[str, ...]) -> pd.DataFrame:
    rows = [
        {"dataset": "d", "task_seed": 0, "method": m, "rank": 4 if m != "full" else None,
         "noise_floor": noise_floor, "total_gap": 0.1, "optimisation": 0.05,
         "approximation": 0.0, "estimation": 0.05}
        for m in methods
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("noise_floor", "methods"),
    [(0.0, ("lora", "full")), (0.01, ("full",))],
    ids=["noise-free dataset", "every LoRA run diverged"],
)
def test_the_gap_figure_says_no_data_where_gaps_in_noise_units_cannot_be_drawn(
    noise_floor, methods
):
    from lorasweep.figures.evidence import gap_decomposition
    from lorasweep.figures.style import no_data_message

    fig = gap_decomposition(Tables(runs=None, epochs=None, gaps=_gaps(noise_floor, methods)))
    assert no_data_message(fig)
    assert no_data_message(gap_decomposition(
        Tables(runs=None, epochs=None, gaps=_gaps(0.01, ("lora", "full")))
    )) is None  # fmt: skip


def two_method_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` and a DoRA copy of them whose losses are twice LoRA's."""
    dora = runs.assign(
        method="dora", run_id="dora_" + runs["run_id"], final_val_loss=2 * runs["final_val_loss"]
    )
    return pd.concat([runs, dora], ignore_index=True)


def test_figures_draw_each_adapter_method_apart_with_its_label():
    """With LoRA and DoRA runs, a figure that draws the best setting per rank draws each
    method's own (DoRA's loss twice LoRA's), labelled by the registry; with LoRA alone it is
    labelled as before."""
    runs = two_method_runs(single_layer_runs())
    fig = draw("loss_vs_rank", runs)
    bars = {bar.get_label(): bar.lines[0] for bar in fig.axes[0].containers}
    lora, dora = bars["LoRA α/r"], bars["DoRA α/r"]
    np.testing.assert_allclose(
        np.asarray(dora.get_ydata(), float), 2 * np.asarray(lora.get_ydata(), float)
    )
    assert lora.get_linestyle() != dora.get_linestyle()
    assert "α/r" in legend_labels(draw("loss_vs_rank", single_layer_runs()))
    assert "DoRA α/r" not in legend_labels(draw("loss_vs_rank", single_layer_runs()))
    deep = legend_labels(draw("deep_targets", two_method_runs(deep_runs())))
    assert {"LoRA attention", "DoRA attention", "LoRA mlp", "DoRA mlp"} <= set(deep)
    heatmap = draw("rank_alpha_heatmap", runs)
    assert sorted(ax.get_title() for ax in heatmap.axes if ax.get_title()) == [
        "tiny · DoRA α/r",
        "tiny · LoRA α/r",
    ]


def test_pareto_points_keep_each_adapter_method_apart():
    points = pareto_points(two_method_runs(single_layer_runs()))
    adapters = points[points["method"] != "full"]
    assert sorted(adapters["method"].unique()) == ["dora", "lora"]
    assert len(adapters) == 2 * len(pareto_points(single_layer_runs()))
    labels = legend_labels(draw("pareto_front", two_method_runs(single_layer_runs())))
    assert {"LoRA, s = α/r", "DoRA, s = α/r"} <= set(labels)


def test_the_gap_figure_draws_each_adapter_method_apart():
    from lorasweep.figures.evidence import gap_decomposition

    gaps = _gaps(0.01, ("lora", "dora", "full"))
    labels = legend_labels(gap_decomposition(Tables(runs=None, epochs=None, gaps=gaps)))
    assert {"total, LoRA", "total, DoRA", "DoRA optimisation"} <= set(labels)
    one = legend_labels(
        gap_decomposition(Tables(runs=None, epochs=None, gaps=_gaps(0.01, ("lora", "full"))))
    )
    assert "total, LoRA" in one and not any("DoRA" in label for label in one)
