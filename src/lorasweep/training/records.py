"""The rules every run follows whichever code trains it, the batched engine
(:mod:`lorasweep.training.batched`) or the single-run oracle (:func:`lorasweep.training.loop.
train_run`): its mini-batch order, its learning rate per tensor, what an epoch records and
when the run has diverged. Each exists here once."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lorasweep.planning.runs import RunSpec


@dataclass
class History:
    """What a run records: one dict per epoch from epoch 0 (before any step), the wall-clock
    seconds of each epoch trained, and the epoch at which the run diverged, if it did."""

    epochs: list[dict]
    epoch_seconds: list[float] = field(default_factory=list)
    diverged_epoch: int | None = None


def epoch_order(
    n_train: int, batch_size: int, shuffle: torch.Generator, device: torch.device
) -> torch.Tensor | None:
    """One epoch's row order: a fresh permutation from the run's ``shuffle`` generator when
    there is more than one mini-batch, else None (every step sees the whole split in order)."""
    if batch_size >= n_train:
        return None
    return torch.randperm(n_train, generator=shuffle).to(device)


def mini_batch_bounds(n_train: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(first row, size) of each mini-batch of an epoch, in order."""
    for lo in range(0, n_train, batch_size):
        yield lo, min(batch_size, n_train - lo)


def tensor_rate(spec: RunSpec, name: str) -> float:
    """The learning rate of the run's trained tensor ``name`` (a parameter name such as
    ``blocks.0.attn.q.lora_B``), by its method record's ``lr_groups``."""
    return spec.record.lr_groups(spec.lr, spec.lr_ratio)[name.rpartition(".")[2]]


def slot_rates(specs: Sequence[RunSpec], names: Mapping[str, str]) -> dict[str, list[float]]:
    """Per tensor of a slot, each slot's :func:`tensor_rate`; ``names`` maps a slot tensor to
    the parameter it holds."""
    return {slot: [tensor_rate(s, name) for s in specs] for slot, name in names.items()}


def initial_record(losses: Mapping[str, float], columns: Sequence[str]) -> dict:
    """Epoch 0: the losses before any step (``train_loss``, ``val_loss``…), no gradient norms."""
    return {"epoch": 0, **losses, **dict.fromkeys(columns, math.nan)}


@dataclass
class EpochSums:
    """One run's running sums over an epoch's steps."""

    loss: float = 0.0
    norms: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add(self, loss: float, size: int, norms: Mapping[str, float]) -> bool:
        """Add one mini-batch of ``size`` rows; False, with no step counted, where its loss is
        not finite (the run diverged before the step)."""
        self.loss += loss * size
        if not math.isfinite(loss):
            return False
        for column, norm in norms.items():
            self.norms[column] = self.norms.get(column, 0.0) + norm
        self.steps += 1
        return True

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)

    def record(self, n_train: int, held_out: Mapping[str, float], columns: Sequence[str]) -> dict:
        """The epoch's record: ``train_loss`` the sample-weighted mean of the mini-batch losses,
        each gradient norm the mean over the steps taken, and ``held_out`` (``val_loss``, and
        ``source_loss``: the losses after the epoch); all losses NaN once the training loss
        stopped being finite."""
        finite = self.finite
        return {
            "train_loss": self.loss / n_train if finite else math.nan,
            **{name: value if finite else math.nan for name, value in held_out.items()},
            **{c: self.norms.get(c, 0.0) / max(self.steps, 1) for c in columns},
        }


def has_diverged(record: Mapping[str, float]) -> bool:
    """A run has diverged once an epoch's validation loss is not finite."""
    return not math.isfinite(record["val_loss"])
