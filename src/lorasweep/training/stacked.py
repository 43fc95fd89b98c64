"""The trainable tensors of many runs stacked along a leading run dimension, and Adam over them.

Each tensor a run trains (for LoRA: A, Bᵀ and the bias where it trains) is stacked with the same
tensor of the other runs into one contiguous (runs × numel) block of a flat buffer, and each
run's part of a block starts at a multiple of :data:`~lorasweep.planning.cohorts.ALIGN` elements.
PyTorch's CPU loops finish a tensor's last few elements (fewer than two vector registers' worth)
with scalar code, which may round differently from the vector code (a fused multiply-add); with
aligned parts every element of every run sits at the same offset from a vector boundary whatever
the other runs in the buffer, so an elementwise update of one run never depends on its
neighbours. Where a tensor's size is already a multiple of the alignment (most shapes), its
stack is a plain contiguous (runs, *shape) tensor that batched products write into directly.

:class:`StackedAdam` applies ``torch.optim.Adam`` to every run at once, with the same operations
in the same order as its single-tensor implementation (the one PyTorch uses on the CPU), and a
learning rate per run and per tensor. Adam normalises each gradient by its running RMS, so a
shared rate could not be emulated by scaling each run's loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from lorasweep.planning.cohorts import aligned

BETAS = (0.9, 0.999)
EPS = 1e-8
"""``torch.optim.Adam``'s defaults, which every run uses."""


@dataclass(frozen=True)
class SlotLayout:
    """The tensors each run trains, by name and shape, and where their stacks lie in a flat
    buffer: the stack of ``name`` starts at ``runs · starts[name]`` and gives each run
    ``aligned(numel)`` elements; ``size`` is one run's total."""

    shapes: dict[str, tuple[int, ...]]
    starts: dict[str, int]
    size: int

    @classmethod
    def of(cls, shapes: Mapping[str, Sequence[int]]) -> SlotLayout:
        starts, size = {}, 0
        for name, shape in shapes.items():
            starts[name] = size
            size += aligned(math.prod(shape))
        return cls({k: tuple(v) for k, v in shapes.items()}, starts, size)

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def block(self, buffer: torch.Tensor, name: str) -> torch.Tensor:
        """The contiguous (runs × aligned numel) block of ``name`` in a flat buffer."""
        runs = buffer.numel() // self.size
        width = aligned(self.numel(name))
        start = runs * self.starts[name]
        return buffer[start : start + runs * width].view(runs, width)

    def view(self, buffer: torch.Tensor, name: str) -> torch.Tensor:
        """``name`` of every run, shaped (runs, *shape), a view into a flat buffer."""
        block = self.block(buffer, name)
        return block[:, : self.numel(name)].view(block.shape[0], *self.shapes[name])

    def select(self, buffer: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """A new flat buffer holding only the runs at ``index``."""
        return torch.cat(
            [self.block(buffer, n).index_select(0, index).view(-1) for n in self.shapes]
        )


class StackedParameters:
    """Parameters and their gradients for a wave of runs, laid out by a :class:`SlotLayout`,
    with views of each tensor (``tensors``, ``grads``, shaped (runs, *shape)) made once."""

    def __init__(self, layout: SlotLayout, runs: int, device: torch.device) -> None:
        self.layout = layout
        self.data = torch.zeros(runs * layout.size, device=device)
        self.grad = torch.zeros(runs * layout.size, device=device)
        self._make_views()

    def _make_views(self) -> None:
        names = self.layout.shapes
        self.tensors = {n: self.layout.view(self.data, n) for n in names}
        self.grads = {n: self.layout.view(self.grad, n) for n in names}
        self._grad_rows = {n: self.grads[n].reshape(self.runs, -1) for n in names}

    @property
    def runs(self) -> int:
        return self.data.numel() // self.layout.size

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def grad_of(self, name: str) -> torch.Tensor:
        return self.grads[name]

    def grad_norms(self, columns: Sequence[str | tuple[str, ...]]) -> torch.Tensor:
        """(runs, len(columns)), float64: per run, the 2-norm of each column's gradient; a column
        naming several tensors takes the norm of their float32 norms together, summing their
        squares in order, as :func:`lorasweep.training.loop.train_epoch` records a network's
        (elementwise across runs, so no run's sum depends on the others)."""
        norms = []
        for column in columns:
            if isinstance(column, str):
                norms.append(self._norm(column))
                continue
            total = torch.zeros(self.runs, dtype=torch.float64, device=self.data.device)
            for name in column:
                total += self._norm(name).square()
            norms.append(total.sqrt())
        return torch.stack(norms, 1)

    def _norm(self, name: str) -> torch.Tensor:
        return torch.linalg.vector_norm(self._grad_rows[name], dim=1).double()

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index`` (runs leaving the wave)."""
        self.data = self.layout.select(self.data, index)
        self.grad = self.layout.select(self.grad, index)
        self._make_views()


class StackedAdam:
    """``torch.optim.Adam`` (default betas and eps, no weight decay) for every run of a
    :class:`StackedParameters`, each tensor of each run with its own learning rate.

    Per element, with gradient g, moments m and v, step t and learning rate η, as PyTorch's
    single-tensor Adam computes it (Kingma & Ba 2015, Algorithm 1, with ε added after the bias
    correction):

        m ← lerp(m, g, 1 − β₁);  v ← β₂·v + (1 − β₂)·g²
        θ ← θ + (−η/(1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + ε)

    The step size −η/(1 − β₁ᵗ) is formed in double precision and rounded to float32, as
    ``addcdiv_`` rounds its ``value``. The tests hold one slot to ``torch.optim.Adam`` bitwise.
    """

    def __init__(self, params: StackedParameters, lrs: Mapping[str, Sequence[float]]) -> None:
        if set(lrs) != set(params.layout.shapes):
            raise ValueError("one learning rate per run for every tensor of the slot")
        self.params = params
        self.names = list(params.layout.shapes)
        self.exp_avg = torch.zeros_like(params.data)
        self.exp_avg_sq = torch.zeros_like(params.data)
        self.lrs = torch.tensor(
            [list(lrs[name]) for name in self.names], dtype=torch.float64, device=params.data.device
        ).unsqueeze(2)
        self.steps = 0
        self._make_blocks()

    def _make_blocks(self) -> None:
        layout = self.params.layout
        self._denom = torch.empty_like(self.params.data)
        self._update = torch.empty_like(self.params.data)
        self._blocks = [
            tuple(layout.block(buffer, name) for buffer in
                  (self.params.data, self.exp_avg, self._denom, self._update))
            for name in self.names
        ]  # fmt: skip

    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = BETAS
        bias_correction1 = 1 - beta1 ** float(self.steps)
        bias_correction2_sqrt = (1 - beta2 ** float(self.steps)) ** 0.5
        grad = self.params.grad
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(self.exp_avg_sq, out=self._denom)
        self._denom.div_(bias_correction2_sqrt).add_(EPS)
        step_sizes = (self.lrs / -bias_correction1).to(torch.float32)
        for (param, exp_avg, denom, update), step_size in zip(
            self._blocks, step_sizes, strict=True
        ):
            torch.mul(exp_avg, step_size, out=update)
            param.addcdiv_(update, denom)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index``, with their moments and learning rates."""
        layout = self.params.layout
        self.params.keep(index)
        self.exp_avg = layout.select(self.exp_avg, index)
        self.exp_avg_sq = layout.select(self.exp_avg_sq, index)
        self.lrs = self.lrs.index_select(1, index)
        self._make_blocks()


def state_bytes(param_numels: Sequence[int], stepped: bool) -> int:
    """What :func:`lorasweep.models.accounting.training_state_bytes` measures for one run that
    trains tensors of these sizes with ``torch.optim.Adam``: parameters and gradients, plus the two
    moments, plus each tensor's float32 step counter once Adam has stepped (before, the moments
    are counted as they will be allocated)."""
    param_bytes = 4 * sum(param_numels)
    counters = 4 * len(param_numels) if stepped else 0
    return 2 * param_bytes + 2 * param_bytes + counters
