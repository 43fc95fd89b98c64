"""The losses of many runs of one linear layer at once, each run on its own slot of stacked
parameters (:mod:`lorasweep.training.stacked`): the batched counterparts of
:mod:`lorasweep.training.exact` (LoRA) and of the reference loss (full fine-tuning).

Every product is a batched matmul over the run dimension, so each run's slice is computed as
its own matrix product whatever the other runs are. Gradients are formed in the same pass as
the loss, as :class:`~lorasweep.training.exact.ResidualLoss` forms them for one run, and
written into the slots' gradient buffer. Rows are processed in chunks whose size depends only on
the layer's shape (:func:`lorasweep.planning.cohorts.rows_per_chunk`), never on the number of
runs, so a run's loss is summed in the same order in any cohort.

A step's rows come as :data:`Rows`: ``None`` (the whole split, in order), one index shared by
every run (runs of one seed draw the same mini-batches), or one index per run. Shared rows are
gathered once and broadcast to the runs without copying.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lorasweep.models.lora import LoRALinear, dropout_keep
from lorasweep.planning.cohorts import rows_per_chunk
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.synthetic import Dataset
from lorasweep.training.exact import (
    base_residual,
    can_use_gram,
    gram_statistics,
    gram_sum_of_squares,
    splits_of,
    trains_on_base_residuals,
)
from lorasweep.training.objective import Rows
from lorasweep.training.records import slot_rates
from lorasweep.training.stacked import SlotLayout, StackedParameters


def gather_rows(
    source: torch.Tensor, rows: Rows, runs: int, minus: torch.Tensor | None = None
) -> torch.Tensor:
    """(runs, b, d): the ``rows`` of ``source``, less ``minus`` (a (d,) vector) if given, for
    each run. ``source`` is one (n, d) split shared by every run, or (runs, n, d) with a split
    per run. Shared rows of a shared source are formed once and broadcast to the runs."""
    if source.dim() == 2 and (rows is None or rows.dim() == 1):
        picked = source if rows is None else source.index_select(0, rows)
        if minus is not None:
            picked = picked - minus
        return picked.expand(runs, *picked.shape)
    if source.dim() == 2:
        out = source.index_select(0, rows.reshape(-1)).view(runs, rows.shape[1], -1)
    elif rows is None:
        out = source if minus is None else source - minus
        return out
    elif rows.dim() == 1:
        out = source.index_select(1, rows)
    else:
        n = source.shape[1]
        offsets = torch.arange(runs, device=rows.device).unsqueeze(1) * n
        flat = source.reshape(runs * n, -1).index_select(0, (rows + offsets).reshape(-1))
        out = flat.view(runs, rows.shape[1], -1)
    return out if minus is None else out.sub_(minus)


def _row_slices(n: int, d_out: int):
    step = rows_per_chunk(d_out)
    for lo in range(0, n, step):
        yield slice(lo, min(lo + step, n))


def copy_generator(original: torch.Generator | None) -> torch.Generator | None:
    """An independent generator in the same state (a twin's own dropout stream)."""
    if original is None:
        return None
    copy = torch.Generator(device=original.device)
    copy.set_state(original.get_state())
    return copy


def kept_slots(items: list, index: torch.Tensor, copy) -> list:
    """The per-slot ``items`` of the slots at ``index``, in order; a slot kept a second time
    (a twin) gets ``copy(item)``, so that each slot draws from a stream of its own."""
    kept, seen = [], set()
    for slot in index.tolist():
        kept.append(copy(items[slot]) if slot in seen else items[slot])
        seen.add(slot)
    return kept


def _sum_of_squares(error: torch.Tensor) -> torch.Tensor:
    """Per run, the sum of squares of a (runs, rows, d) error, as float64: the square of its
    float32 2-norm (a reduction that forms no temporary)."""
    return torch.linalg.vector_norm(error.reshape(error.shape[0], -1), dim=1).double().square()


def _accumulate(out: torch.Tensor, first: bool, fn, *args) -> None:
    """out = fn(*args) on the first row chunk, out += fn(*args) after it (fn: bmm or sum)."""
    if first:
        fn(*args, out=out)
    else:
        out += fn(*args)


class StackedLoRA:
    """R LoRA adapters on one dataset's frozen layer: the loss ``mse_loss(model(x), y)`` of
    each, computed as :func:`lorasweep.training.exact.cached_loss` computes it for one run.

    Each run fits ``b + s·B(A·dropout(x))`` to the residual r = y − W₀x. The residual is the
    dataset's, cached once per job and shared by the whole cohort, or, for PiSSA (whose frozen
    weight is W₀ − s·B₀A₀), each run's own. Where every step sees the whole training split and
    :func:`~lorasweep.training.exact.can_use_gram` holds, the training loss comes from the
    split's sufficient statistics instead, shared by the cohort
    (:func:`~lorasweep.training.exact.gram_sum_of_squares`).

    The slot holds A (r×d_in), Bᵀ (r×d_out; the layout chosen for the batched products) and the
    bias where it trains. Runs of different ranks may share a cohort
    padded to the largest: a padded row of A or Bᵀ starts at zero and its gradient is masked to
    exactly zero, so Adam never moves it (m and v stay 0, and so does the update). The planner
    groups by rank instead (:mod:`lorasweep.planning.cohorts`); padding is kept for measuring
    that choice.
    """

    norm_columns = {"grad_norm_A": "A", "grad_norm_B": "Bt"}
    cached_base = True

    def __init__(
        self,
        specs: Sequence[RunSpec],
        models: Sequence[LoRALinear],
        dataset: Dataset,
        batch_size: int,
    ) -> None:
        first = models[0]
        device = first.lora_A.device
        self.bias_trains = specs[0].bias == "lora_only"
        self.ranks = [model.rank for model in models]
        rank = max(self.ranks)
        shapes = {"A": (rank, first.in_features), "Bt": (rank, first.out_features)}
        if self.bias_trains:
            shapes["bias"] = (first.out_features,)
        self.params = StackedParameters(SlotLayout.of(shapes), len(models), device)
        with torch.no_grad():
            for slot, model in enumerate(models):
                self.params["A"][slot, : model.rank] = model.lora_A
                self.params["Bt"][slot, : model.rank] = model.lora_B.T
                if self.bias_trains:
                    self.params["bias"][slot] = model.base.bias
        self.padding = None
        if min(self.ranks) < rank:
            rows = torch.arange(rank, device=device)
            ranks = torch.tensor(self.ranks, device=device)
            self.padding = (rows >= ranks.unsqueeze(1)).unsqueeze(2)
        self.scaling = torch.tensor([m.scaling for m in models], dtype=torch.float64, device=device)
        self._set_scales()
        self.frozen_bias = None if self.bias_trains else first.base.bias.detach()
        self.dropout = first.dropout
        self.dropout_generators = [m.dropout_generator for m in models]
        self.x = {split: dataset[f"X_{split}"].to(device) for split in splits_of(dataset.tensors)}
        self.residual = {split: self._residual(specs, models, dataset, split) for split in self.x}
        self.gram = None
        if can_use_gram(first, batch_size, self.x["train"].shape[0]):
            self.gram = self._statistics(dataset)

    def _set_scales(self) -> None:
        self._scaling32 = self.scaling.to(torch.float32).view(-1, 1, 1)
        self._scales: dict[int, torch.Tensor] = {}

    @staticmethod
    def _residual(specs, models, dataset: Dataset, split: str) -> torch.Tensor:
        """r = y − W₀x of ``split``: the job's cache where it holds one, else computed here as
        the single-run path computes it; (runs, n, d_out) for PiSSA, one per run."""
        x = dataset[f"X_{split}"]
        y = dataset.tensors.get(f"y_{split}")
        if not trains_on_base_residuals(specs[0]):
            return torch.stack([base_residual(x, y, m.base.weight) for m in models])
        if f"r_{split}" in dataset.tensors:
            return dataset[f"r_{split}"]
        return base_residual(x, y, dataset["W0"])

    def _statistics(self, dataset: Dataset) -> dict:
        residual = self.residual["train"]
        d_out = residual.shape[-1]
        if residual.dim() == 2:
            return gram_statistics(self.x["train"], None, None, residual, d_out)
        per_run = [gram_statistics(self.x["train"], None, None, r, d_out) for r in residual]
        return {
            k: torch.stack([s[k] for s in per_run]) if torch.is_tensor(per_run[0][k]) else v
            for k, v in per_run[0].items()
        }

    @property
    def runs(self) -> int:
        return self.params.runs

    def learning_rates(self, specs: Sequence[RunSpec]) -> dict[str, list[float]]:
        """Each slot tensor at its parameter's :func:`~lorasweep.training.records.tensor_rate`."""
        names = {"A": "lora_A", "Bt": "lora_B", "bias": "bias"}
        return slot_rates(specs, {k: names[k] for k in self.params.layout.shapes})

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        """x after each run's inverted dropout, drawn as :meth:`LoRALinear.adapter_input` draws
        it: one mask per run for the whole step, from the run's own generator."""
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for slot, generator in enumerate(self.dropout_generators):
            keep = dropout_keep(x.shape[1:], generator, self.dropout)
            torch.mul(x[slot], keep.to(x.device, x.dtype), out=out[slot])
        return out.div_(1.0 - self.dropout)

    def train_step(self, rows: Rows) -> torch.Tensor:
        """Each run's mean squared error over ``rows`` of the training split (float64, one per
        run), with its gradients written into the slots."""
        if self.gram is not None and rows is None:
            return self._gram_step(backward=True)
        return self._rows_loss("train", rows, backward=True)

    def evaluate(self, split: str) -> torch.Tensor:
        """Each run's loss on a whole split (no dropout, no gradients)."""
        if self.gram is not None and split == "train":
            return self._gram_step(backward=False)
        return self._rows_loss(split, None, backward=False)

    def _rows_loss(self, split: str, rows: Rows, backward: bool) -> torch.Tensor:
        """Row chunks of e = s·(xAᵀ)Bᵀ + b − r: ‖e‖² per run, and with ``backward`` the
        gradients of :class:`~lorasweep.training.exact.ResidualLoss` (∂/∂Bᵀ = 2s·Uᵀe,
        ∂/∂A = 2s·(eB)ᵀx, ∂/∂b = 2·eᵀ1 over the element count, with U = xAᵀ). A frozen bias
        is taken off the shared target rows once rather than added to every run's error."""
        runs, a, bt = self.runs, self.params["A"], self.params["Bt"]
        x = gather_rows(self.x[split], rows, runs)
        if backward and self.dropout > 0:
            x = self._dropped(x)
        target = gather_rows(self.residual[split], rows, runs, self.frozen_bias)
        scaled_u = torch.bmm(x, a.transpose(1, 2)).mul_(self._scaling32)
        total = torch.zeros(runs, dtype=torch.float64, device=a.device)
        grad_bt, grad_bias = self.params.grad_of("Bt"), self.params.grads.get("bias")
        grad_u = torch.empty_like(scaled_u) if backward else None
        for part in _row_slices(x.shape[1], target.shape[-1]):
            error = torch.baddbmm(target[:, part], scaled_u[:, part], bt, beta=-1)
            if self.bias_trains:
                error += self.params["bias"].unsqueeze(1)
            total += _sum_of_squares(error)
            if backward:
                first = part.start == 0
                _accumulate(grad_bt, first, torch.bmm, scaled_u[:, part].transpose(1, 2), error)
                torch.bmm(error, bt.transpose(1, 2), out=grad_u[:, part])
                if self.bias_trains:
                    _accumulate(grad_bias, first, torch.sum, error, 1)
        count = target.shape[1] * target.shape[2]
        if backward:
            grad_u.mul_(self._gradient_scale(count))
            torch.bmm(grad_u.transpose(1, 2), x, out=self.params.grad_of("A"))
            grad_bt.mul_(2 / count)
            if self.bias_trains:
                grad_bias.mul_(2 / count)
            self._mask_padding()
        return total / count

    def _mask_padding(self) -> None:
        """Zero the gradient of every padded row of A and Bᵀ, whatever it came out as."""
        if self.padding is not None:
            for name in ("A", "Bt"):
                self.params.grad_of(name).masked_fill_(self.padding, 0.0)

    def _gradient_scale(self, count: int) -> torch.Tensor:
        """2s/count per run, in float32, shaped to scale a (runs, rows, r) tensor."""
        if count not in self._scales:
            scale = (2 * self.scaling / count).to(self.params.data.dtype)
            self._scales[count] = scale.view(-1, 1, 1)
        return self._scales[count]

    def _gram_step(self, backward: bool) -> torch.Tensor:
        """Each run's training loss from the shared statistics (float64, by autograd when
        ``backward``), rounded to float32 as :class:`~lorasweep.training.exact.GramLoss` does."""
        names = list(self.params.layout.shapes)
        leaves = {n: self.params[n].detach().requires_grad_(backward) for n in names}
        with torch.enable_grad():
            bias = leaves["bias"] if self.bias_trains else self.frozen_bias
            total = gram_sum_of_squares(
                self.gram,
                leaves["A"].double(),
                leaves["Bt"].double().transpose(1, 2),
                bias.double(),
                self.scaling,
            )
            loss = (total / self.gram["count"]).to(self.params.data.dtype)
            if backward:
                loss.sum().backward()
        if backward:
            for name, leaf in leaves.items():
                self.params.grad_of(name).copy_(leaf.grad)
            self._mask_padding()
        return loss.detach().double()

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index`` (the parameters are kept by the optimizer)."""
        self.scaling = self.scaling.index_select(0, index)
        self._set_scales()
        self.ranks = [self.ranks[slot] for slot in index.tolist()]
        if self.padding is not None:
            self.padding = self.padding.index_select(0, index)
        self.dropout_generators = kept_slots(self.dropout_generators, index, copy_generator)
        for split, residual in self.residual.items():
            if residual.dim() == 3:
                self.residual[split] = residual.index_select(0, index)
        if self.gram is not None and self.gram["grx"].dim() == 3:
            self.gram = {
                k: v.index_select(0, index) if torch.is_tensor(v) else v
                for k, v in self.gram.items()
            }

    def tensors(self, slot: int) -> dict[str, torch.Tensor]:
        """The run's trained tensors as the single-run path stores them."""
        rank = self.ranks[slot]
        out = {
            "lora_A": self.params["A"][slot, :rank].detach().cpu().clone(),
            "lora_B": self.params["Bt"][slot, :rank].detach().T.contiguous().cpu(),
        }
        if self.bias_trains:
            out["bias"] = self.params["bias"][slot].detach().cpu().clone()
        return out


class StackedFull:
    """R full fine-tunings of one dataset's layer (weight and bias from W₀, b₀): each run's
    ``mse_loss(x·Wᵀ + b, y)``. The slot holds Wᵀ (d_in×d_out) and the bias."""

    norm_columns = {"grad_norm_W": "Wt"}
    cached_base = False

    def __init__(
        self,
        specs: Sequence[RunSpec],
        models: Sequence[torch.nn.Linear],
        dataset: Dataset,
        batch_size,
    ) -> None:
        first = models[0]
        device = first.weight.device
        shapes = {"Wt": tuple(first.weight.T.shape), "bias": tuple(first.bias.shape)}
        self.params = StackedParameters(SlotLayout.of(shapes), len(models), device)
        with torch.no_grad():
            for slot, model in enumerate(models):
                self.params["Wt"][slot] = model.weight.T
                self.params["bias"][slot] = model.bias
        self.data = {}
        for split in splits_of(dataset.tensors):
            if f"y_{split}" not in dataset.tensors:
                raise ValueError(f"{specs[0].run_id}: needs the targets y, which this job released")
            self.data[split] = (dataset[f"X_{split}"], dataset[f"y_{split}"])

    @property
    def runs(self) -> int:
        return self.params.runs

    def learning_rates(self, specs: Sequence[RunSpec]) -> dict[str, list[float]]:
        return slot_rates(specs, {"Wt": "weight", "bias": "bias"})

    def train_step(self, rows: Rows) -> torch.Tensor:
        return self._loss("train", rows, backward=True)

    def evaluate(self, split: str) -> torch.Tensor:
        return self._loss(split, None, backward=False)

    def _loss(self, split: str, rows: Rows, backward: bool) -> torch.Tensor:
        """Row chunks of e = xWᵀ + b − y: ‖e‖² per run and, with ``backward``, the gradients
        ∂/∂Wᵀ = 2·xᵀe and ∂/∂b = 2·eᵀ1 over the element count."""
        runs, wt = self.runs, self.params["Wt"]
        x, y = (gather_rows(t, rows, runs) for t in self.data[split])
        bias = self.params["bias"].unsqueeze(1)
        total = torch.zeros(runs, dtype=torch.float64, device=wt.device)
        grad_wt, grad_bias = self.params.grad_of("Wt"), self.params.grad_of("bias")
        for part in _row_slices(x.shape[1], y.shape[-1]):
            error = torch.baddbmm(y[:, part], x[:, part], wt, beta=-1)
            error += bias
            total += _sum_of_squares(error)
            if backward:
                first = part.start == 0
                _accumulate(grad_wt, first, torch.bmm, x[:, part].transpose(1, 2), error)
                _accumulate(grad_bias, first, torch.sum, error, 1)
        count = y.shape[1] * y.shape[2]
        if backward:
            grad_wt.mul_(2 / count)
            grad_bias.mul_(2 / count)
        return total / count

    def keep(self, index: torch.Tensor) -> None:
        """Nothing per run besides the parameters, which the optimizer keeps."""

    def tensors(self, slot: int) -> dict[str, torch.Tensor]:
        return {
            "weight": self.params["Wt"][slot].detach().T.contiguous().cpu(),
            "bias": self.params["bias"][slot].detach().cpu().clone(),
        }
