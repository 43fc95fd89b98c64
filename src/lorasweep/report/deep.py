"""The report's parts about deep models: how a deep dataset is described, and the fixed-budget
table (LoRA paper Table 5's layout)."""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis.deep_findings import budget_comparisons


def describe_task(meta: pd.Series) -> tuple[str, str]:
    """(shape, task) of a deep dataset's summary sentence, from its runs row."""
    if meta["dataset_kind"] == "transformer":
        shape = (
            f"transformer, {meta['n_layers']} block(s) of width {meta['d_model']}, "
            f"{meta['n_heads']} heads, {meta['seq_len']} tokens"
        )
    else:
        shape = (
            f"MLP {meta['in_features']}→{meta['out_features']}, {meta['n_layers']} layer(s) "
            f"of width {meta['d_model']}"
        )
    return shape, f"a rank-{meta['task_rank']} shift in {meta['shifted']}"


def budget_section(runs: pd.DataFrame) -> list[str]:
    """A table per fixed-budget comparison: each target set's matrix types, rank, trainable
    parameters, best learning rate and final validation and test MSE (mean ± sd over runs);
    nothing if there is none."""
    table = budget_comparisons(runs)
    if table.empty:
        return []
    shown = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "rank × types": table["budget"],
            "targets": table["targets"],
            "matrix types": table["adapted_types"],
            "rank": table["rank"],
            "trainable params": table["trainable_params"].map("{:,}".format),
            "best lr (validation)": table["lr"].map("{:g}".format),
            "final val MSE": [
                f"{m:.4g} ± {s:.2g}" if s else f"{m:.4g}"
                for m, s in zip(table["mean"], table["std"], strict=True)
            ],
            "final test MSE": [
                "n/a" if pd.isna(m) else f"{m:.4g} ± {s:.2g}" if s else f"{m:.4g}"
                for m, s in zip(table["test_mean"], table["test_std"], strict=True)
            ],
            "settings searched": table["settings_searched"],
            "runs": table["count"],
        }
    )
    return [
        "<h2>Fixed parameter budget</h2>",
        "<p>Target sets trained at the same rank × number of matrix types, and so with the "
        "same number of trainable parameters and otherwise equal settings (LoRA paper, "
        "Table 5), each at its own best learning rate on validation; the finding is judged on "
        "the test MSE. Losses are mean ± sd over runs.</p>",
        shown.to_html(index=False, escape=True, border=0),
    ]
