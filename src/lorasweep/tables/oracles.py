"""``oracles.csv``: closed-form reference fits of each single-layer dataset, on its own splits.

Both oracles fit the training split's residual R = Y − XW₀ᵀ − 1b₀ᵀ with an update Δ of W₀ (and,
where the bias trains, an offset δ of b₀), in float64 from the stored tensors:

- ``oracle_full``: ordinary least squares with an intercept, the best full fine-tuning of the
  layer on the training split (full FT always trains the bias).
- ``oracle_lora`` at rank r: reduced-rank regression, the least-squares Δ of rank ≤ r. With
  Δ̂ the OLS fit and V_r the top-r right-singular vectors of its fitted values XΔ̂ᵀ (an n×d_out
  matrix), the solution is Δ_r = V_rV_rᵀΔ̂ (Izenman 1975, J. Multivariate Anal. 5:248;
  Reinsel & Velu 1998, §2.3, with identity weighting). A trained intercept is profiled out by
  centring X and R first. One row per rank and bias setting of the config's LoRA runs.

Each row gives the train, validation and test MSE of the fit (normalised as the runs' losses,
the mean over samples and outputs) and, for ``lowrank``, its exact population risk
(:mod:`lorasweep.tasks.population`). The deep kinds have no closed-form fit and no rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
import torch

from lorasweep.options import DEEP_KINDS
from lorasweep.tasks import population
from lorasweep.tasks.synthetic import Dataset

COLUMNS = ["dataset", "task_seed", "oracle", "rank", "bias", "train_loss", "val_loss",
           "test_loss", "population_loss"]  # fmt: skip
SPLITS = ("train", "val", "test")


def least_squares(
    x: torch.Tensor, r: torch.Tensor, intercept: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Δ, δ) minimising ‖R − XΔᵀ − 1δᵀ‖² (δ = 0 without ``intercept``), the minimum-norm Δ
    where X is rank-deficient."""
    x_mean, r_mean = _means(x, r, intercept)
    xc, rc = x - x_mean, r - r_mean
    delta = torch.linalg.lstsq(xc, rc, driver="gelsd").solution.T
    return delta, (r_mean - x_mean @ delta.T).squeeze(0)


def reduced_rank(
    x: torch.Tensor, r: torch.Tensor, rank: int, intercept: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Δ_r, δ) minimising ‖R − XΔᵀ − 1δᵀ‖² over Δ of rank ≤ ``rank``: the OLS fit projected
    onto the top right-singular vectors of its fitted values (module docstring)."""
    x_mean, r_mean = _means(x, r, intercept)
    delta, _ = least_squares(x - x_mean, r - r_mean, intercept=False)
    fitted = (x - x_mean) @ delta.T
    _, _, vh = torch.linalg.svd(fitted, full_matrices=False)
    top = vh[:rank].T
    delta = top @ (top.T @ delta)
    return delta, (r_mean - x_mean @ delta.T).squeeze(0)


def _means(x: torch.Tensor, r: torch.Tensor, intercept: bool):
    if not intercept:
        return torch.zeros_like(x[:1]), torch.zeros_like(r[:1])
    return x.mean(0, keepdim=True), r.mean(0, keepdim=True)


def residuals(dataset: Dataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """split → (X, R = Y − XW₀ᵀ − 1b₀ᵀ), float64 on the CPU, for the splits the dataset has."""
    w0, b0 = dataset["W0"].double().cpu(), dataset["b0"].double().cpu()
    out = {}
    for split in SPLITS:
        if f"X_{split}" in dataset.tensors:
            x, y = dataset[f"X_{split}"].double().cpu(), dataset[f"y_{split}"].double().cpu()
            out[split] = (x, y - x @ w0.T - b0)
    return out


def _row(dataset: Dataset, data, oracle: str, rank, bias: str, delta, offset) -> dict:
    losses = {
        f"{split}_loss": float((r - x @ delta.T - offset).square().mean())
        for split, (x, r) in data.items()
    }
    risk = None
    if population.has_population_risk(dataset):
        trained = bias == "lora_only"
        bias_value = dataset["b0"].double().cpu() + offset if trained else None
        risk = population.update_risk(dataset, delta, bias_value)
    return {"dataset": dataset.spec.name, "task_seed": dataset.spec.task_seed, "oracle": oracle,
            "rank": rank, "bias": bias, **losses, "population_loss": risk}  # fmt: skip


def dataset_oracles(dataset: Dataset, settings: Iterable[tuple[int, str]]) -> list[dict]:
    """The rows of one single-layer dataset: ``oracle_full``, then ``oracle_lora`` at each
    (rank, bias) of ``settings``."""
    data = residuals(dataset)
    x, r = data["train"]
    rows = [_row(dataset, data, "oracle_full", None, "lora_only", *least_squares(x, r, True))]
    for rank, bias in sorted(set(settings), key=lambda s: (s[1], s[0])):
        fit = reduced_rank(x, r, rank, intercept=bias == "lora_only")
        rows.append(_row(dataset, data, "oracle_lora", rank, bias, *fit))
    return rows


def oracle_table(
    datasets: Mapping[str, Dataset], settings: Mapping[str, Iterable[tuple[int, str]]]
) -> pd.DataFrame:
    """``oracles.csv`` for ``datasets`` (replicate name → dataset), at the (rank, bias)
    ``settings`` of each (:func:`lorasweep.planning.runs.rank_settings`); a replicate's rows
    name its dataset and task seed, as ``runs.csv`` does."""
    rows = []
    for name in sorted(datasets):
        dataset = datasets[name]
        if dataset.spec.kind not in DEEP_KINDS:
            rows += dataset_oracles(dataset, [tuple(s) for s in settings.get(name, ())])
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["rank"] = pd.array(table["rank"], dtype="Int64")
    return table
