"""The report's method comparison: ``methods.csv`` as a table, where the study compares
methods (:mod:`lorasweep.analysis.methods`)."""

from __future__ import annotations

import math

import pandas as pd

from lorasweep.analysis.methods import compares_methods


def _number(value, text: str = "{:.4g}") -> str:
    return text.format(value) if pd.notna(value) and math.isfinite(value) else "n/a"


def _interval(row: pd.Series) -> str:
    if pd.isna(row["test_ci_low"]):
        return _number(row["test_loss"])
    low, high = _number(row["test_ci_low"]), _number(row["test_ci_high"])
    return f"{_number(row['test_loss'])} [{low}, {high}]"


def _budget(row: pd.Series) -> str:
    parts = []
    if pd.notna(row["rank"]):
        parts.append(f"r={int(row['rank'])}")
    if isinstance(row.get("targets"), str):
        parts.append(row["targets"])
    return ", ".join(parts) or "—"


def methods_section(table: pd.DataFrame | None) -> list[str]:
    """The methods table: every arm at its own best setting and learning rate on validation,
    with its test MSE and 95 % interval, budget and costs; nothing where the study compares no
    methods."""
    if table is None or table.empty or not compares_methods(table["method"]):
        return []
    shown = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "method": table["label"],
            "trained by": table["trained_by"],
            "budget": [_budget(row) for _, row in table.iterrows()],
            "best lr": table["lr"].map(lambda v: _number(v, "{:.3g}")),
            "settings (lrs) searched": [
                f"{s} ({n})"
                for s, n in zip(table["settings_searched"], table["lrs_searched"], strict=True)
            ],
            "test MSE [95 % CI]": [_interval(row) for _, row in table.iterrows()],
            "above σ²": table["excess_over_floor"].map(lambda v: _number(100 * v, "{:+.0f} %")),
            "trainable params": table["trainable_params"].map(lambda v: _number(v, "{:,.0f}")),
            "training state (bytes)": table["train_state_bytes"].map(
                lambda v: _number(v, "{:,.0f}")
            ),
            "ms / step": table["step_seconds"].map(lambda v: _number(1000 * v, "{:.3g}")),
            "‖ΔW − ΔW*‖ / ‖ΔW*‖": table["delta_error"].map(lambda v: _number(v, "{:.3g}")),
            "φ to ΔW*": table["phi_true"].map(lambda v: _number(v, "{:.3g}")),
        }
    )
    return [
        "<h2>Methods against full fine-tuning</h2>",
        "<p>Every method at each budget, at the setting and learning rate with the lowest mean "
        "final validation loss on its own grid, reported on the test split with a 95 % "
        "bootstrap interval over units, as <code>tables/methods.csv</code> holds it. LoRA and "
        "DoRA train on this package's engine, batched; every other method trains through real "
        "PEFT (<code>get_peft_model</code>), one run at a time, so its time per step is not "
        "comparable with the engine's. ΔW is each run's merged change of weight (PEFT's own "
        "merge), against the task's known shift ΔW*.</p>",
        shown.to_html(index=False, escape=True, border=0),
    ]
