"""What the batched engine (:mod:`lorasweep.training.batched`) asks of a model kind: a stacked
objective, the loss and gradients of every run of a wave at once on its slot of stacked
parameters. A single layer's are hand-batched products
(:class:`~lorasweep.training.batched_linear.StackedLoRA`,
:class:`~lorasweep.training.batched_linear.StackedFull`); any model's, a single layer being a
network of one module, is ``torch.vmap`` of ``torch.func.grad_and_value`` over
``torch.func.functional_call`` (:class:`~lorasweep.training.batched_deep.StackedNetwork`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch

from lorasweep.planning.runs import RunSpec
from lorasweep.training.stacked import StackedParameters

Rows = torch.Tensor | None
"""Rows of a step: None (the whole split), (b,) shared by every run, or (runs, b) per run."""


@runtime_checkable
class StackedObjective(Protocol):
    """The loss of every run of a wave, each on its own slot of :attr:`params`."""

    params: StackedParameters
    """The trained tensors of every slot, and the gradient buffer :meth:`train_step` fills."""

    norm_columns: Mapping[str, str | tuple[str, ...]]
    """Per recorded gradient-norm column (``grad_norm_A``…), the slot tensor or tensors whose
    gradient norm it is (:meth:`StackedParameters.grad_norms`)."""

    cached_base: bool
    """Whether the loss trains against a cached residual y − W₀x (recorded with each run)."""

    def learning_rates(self, specs: Sequence[RunSpec]) -> Mapping[str, Sequence[float]]:
        """Per tensor of the slot, each slot's learning rate (one spec per slot)."""
        ...

    def train_step(self, rows: Rows) -> torch.Tensor:
        """Each slot's training loss on ``rows`` (float64), its gradients written into
        :attr:`params`."""
        ...

    def evaluate(self, split: str) -> torch.Tensor:
        """Each slot's loss on a whole split (float64; no dropout, no gradients)."""
        ...

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the per-slot state of the slots at ``index`` (the optimizer keeps the
        parameters)."""
        ...

    def tensors(self, slot: int) -> dict[str, torch.Tensor]:
        """The slot's trained tensors on the CPU, under the names a run folder stores."""
        ...
