"""The exact population risk of a linear layer on a single-layer ``lowrank`` task.

With x ~ N(0, Σ), ε ~ N(0, I) and y = W*x + b* + σε, a layer predicting Wx + b has the
expected per-element squared error

    R(W, b) = (tr(DΣDᵀ) + ‖c‖²) / d_out + σ²,   D = W − W*, c = b − b*,

normalised as the losses are (``mse_loss`` averages over samples and outputs): E‖Dx + c‖² =
tr(DΣDᵀ) + ‖c‖² since E x = 0 and E xxᵀ = Σ. Σ is I, or (I − P) + leak·P for a dataset with a
source task (:mod:`lorasweep.tasks.synthetic`). For ``lowrank`` W* = W₀ + ΔW* and b* = b₀.
"""

from __future__ import annotations

import torch

from lorasweep.tasks.synthetic import SOURCE_DIRECTIONS, Dataset


def has_population_risk(dataset: Dataset) -> bool:
    """Whether :func:`update_risk` applies: a single-layer ``lowrank`` dataset."""
    return dataset.spec.kind == "lowrank"


def input_covariance(dataset: Dataset) -> torch.Tensor | None:
    """Σ of the task's inputs (float64): (I − P) + leak·P with P = V_kV_kᵀ from the stored
    source directions, or None for Σ = I."""
    if SOURCE_DIRECTIONS not in dataset.tensors:
        return None
    directions = dataset[SOURCE_DIRECTIONS].double().cpu()
    projector = directions @ directions.T
    identity = torch.eye(projector.shape[0], dtype=torch.float64)
    return identity - (1.0 - dataset.spec.source.leak) * projector


def risk(dataset: Dataset, weight_gap: torch.Tensor, bias_gap: torch.Tensor | None) -> float:
    """R(W, b) of the module docstring from D = W − W* and c = b − b* (None: c = 0). With a
    source task tr(DΣDᵀ) = ‖D‖² − (1 − leak)·‖DV_k‖², which never forms Σ."""
    gap = weight_gap.double().cpu()
    quadratic = gap.square().sum()
    if SOURCE_DIRECTIONS in dataset.tensors:
        along = gap @ dataset[SOURCE_DIRECTIONS].double().cpu()
        quadratic = quadratic - (1.0 - dataset.spec.source.leak) * along.square().sum()
    if bias_gap is not None:
        quadratic = quadratic + bias_gap.double().cpu().square().sum()
    return float(quadratic) / dataset.spec.out_features + dataset.spec.noise_std**2


def update_risk(dataset: Dataset, update: torch.Tensor, bias: torch.Tensor | None) -> float:
    """R of W₀ + ``update`` with bias ``bias`` (None: the frozen b₀) on a ``lowrank`` dataset:
    D = update − ΔW* and c = bias − b₀."""
    gap = update.double().cpu() - dataset["delta_W"].double().cpu()
    bias_gap = None if bias is None else bias.double().cpu() - dataset["b0"].double().cpu()
    return risk(dataset, gap, bias_gap)
