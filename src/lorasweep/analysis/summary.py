"""The derived tables that the report reads: best settings, efficiency against full fine-tuning,
the findings, the intruder means, the gap decomposition and the method comparison, each
computed once from the run tables (``tables/<name>.csv``)."""

from __future__ import annotations

import pandas as pd

from lorasweep.analysis import findings, statistics
from lorasweep.analysis.deep_findings import deep_findings
from lorasweep.analysis.evidence_findings import evidence_findings, intruder_means
from lorasweep.analysis.gaps import gap_table
from lorasweep.analysis.methods import compares_methods, method_findings, method_table
from lorasweep.analysis.selections import selections_table

FINDING_COLUMNS = ["claim_id", "claim", "verdict", "dataset", "estimate", "ci_low", "ci_high",
                   "n_units", "n_replicates", "threshold", "search_budget", "evidence"]  # fmt: skip
INTEGER_COLUMNS = ["rank", "seeds", "n_units", "n_replicates", "settings_searched",
                   "lrs_searched", "trainable_params", "total_params", "train_state_bytes",
                   "adapter_bytes"]  # fmt: skip
BEST_COLUMNS = ["dataset", "method", "rank", "final_val_loss", "final_val_loss_sd",
                "final_test_loss", "final_test_loss_sd", "seeds", "n_replicates",
                "settings_searched", "lrs_searched"]  # fmt: skip
"""The columns of ``best_settings.csv`` besides the settings themselves (after ``rank``)."""


def best_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the LoRA settings with the lowest mean final validation loss at each rank,
    and full fine-tuning's best learning rate, with that validation loss (mean, sd), the test
    loss of the same runs (what the report gives), the number of runs and task replicates, and
    the arm's search budget (settings and learning rates tried)."""
    lora = statistics.best_lora_settings(runs, ["dataset", "rank"])
    full = statistics.best_full(runs).assign(method="full")
    frames = [f for f in (lora, full) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=BEST_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table = table.rename(
        columns={"mean": "final_val_loss", "std": "final_val_loss_sd", "count": "seeds",
                 "test_mean": "final_test_loss", "test_std": "final_test_loss_sd"}
    )  # fmt: skip
    first = ["dataset", "method", "rank"]
    settings = [c for c in table.columns if c not in BEST_COLUMNS]
    table = table.reindex(columns=[*first, *settings, *BEST_COLUMNS[3:]])
    return table.sort_values(first, na_position="last", kind="stable").reset_index(drop=True)


def findings_table(items: list[findings.Finding]) -> pd.DataFrame:
    """One row per finding, in the report's order, with the interval of the dataset that
    decided its verdict where it has one."""
    rows = []
    for f in items:
        check, interval = f.deciding, f.deciding.interval if f.deciding else None
        rows.append(
            {
                "claim_id": f.claim,
                "claim": f.statement,
                "verdict": f.verdict,
                "dataset": check.dataset if check else "",
                "estimate": interval.estimate if interval else None,
                "ci_low": interval.low if interval and interval.n > 1 else None,
                "ci_high": interval.high if interval and interval.n > 1 else None,
                "n_units": interval.n if interval else None,
                "n_replicates": check.n_replicates if check else None,
                "threshold": check.threshold if check else None,
                "search_budget": check.budget if check else "",
                "evidence": f.evidence,
            }
        )
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


def summarise(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    timings: pd.DataFrame,
    pairs: pd.DataFrame | None,
    lr_optima: pd.DataFrame | None,
    intruders: pd.DataFrame | None,
    tolerance: float,
    forgetting: pd.DataFrame | None = None,
    oracles: pd.DataFrame | None = None,
    geometry: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """The summary tables of one study, by name: best settings, efficiency, findings, intruder
    means, gaps, the figures' selections and the method comparison (``forgetting`` is
    ``forgetting.csv``, ``oracles`` ``oracles.csv``, ``geometry`` ``geometry.csv``). The method
    comparison's findings join the others where the study compares methods
    (:func:`compares_methods`)."""
    efficiency = statistics.efficiency_table(runs, timings)
    items = (
        findings.all_findings(runs, epochs, pairs, efficiency, tolerance)
        + evidence_findings(runs, lr_optima, intruders, forgetting)
        + deep_findings(runs, tolerance)
    )
    if compares_methods(runs["method"]):
        items += method_findings(runs)
    return {
        "best_settings": best_settings(runs),
        "efficiency": efficiency,
        "findings": findings_table(items),
        "intruder_means": intruder_means(runs, intruders),
        "gaps": gap_table(runs, oracles),
        "selections": selections_table(runs),
        "methods": method_table(runs, timings, geometry),
    }


def read_summary(path) -> pd.DataFrame:
    """A summary table as written, with its integer columns as nullable integers (``rank`` is
    empty for full fine-tuning) and empty text as empty strings."""
    frame = pd.read_csv(path)
    for column in INTEGER_COLUMNS:
        if column in frame:
            frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ("settings", "evidence", "dataset", "search_budget"):
        if column in frame:
            frame[column] = frame[column].fillna("")
    return frame
