"""The batched engine: the runs of a cohort train together as one tensor program.

Runs that share a dataset and a model shape (:func:`lorasweep.planning.cohorts.cohort_key`) stack
their parameters along a leading run dimension (:mod:`lorasweep.training.stacked`); each run's α
and scale, learning rate, LoRA+ ratio and seed (its init, its shuffle order, its dropout masks)
stay its own. One step computes every run's loss and gradients in batched products
(:mod:`lorasweep.training.batched_linear`, :mod:`lorasweep.training.batched_deep`) and one
batched Adam updates them all. A run whose loss
stops being finite leaves the cohort, recorded as the single-run path records it, while the
others go on.

**Exactness.** Each run starts from the model :func:`~lorasweep.training.loop.build_model` builds
for it, draws its mini-batches and dropout masks from the single-run path's generators, and is
updated with ``torch.optim.Adam``'s arithmetic; only the order of float operations inside the
loss and its gradient differs from :func:`~lorasweep.training.loop.train_run`. Epoch 0 (before
any step) agrees within 1e-6 relative for every run. Later epochs agree within 1e-5 relative
for well-conditioned runs (tested for every method, init, scaling rule, bias, dropout and kind of
the test configs); where training amplifies rounding, as from a randn-initialised B at a large
constant scale (an epoch-0 loss many orders above the data's), the two paths can drift apart by
percent after a few epochs, and the tests hold such runs only to epoch 0 and to finite losses.
Each run's numbers come from its own slice of
a batched product or from elementwise operations on its aligned slot, so at one thread a run's
results are bitwise the same whichever runs share its cohort (tested). A wave is never narrower
than two slots (a lone run gets an identical twin whose results are dropped): PyTorch computes a
one-matrix product with a vector operand through a different kernel than a batched one.

**Memory.** A cohort trains in waves of runs that fit the memory budget
(:func:`lorasweep.planning.resources.cohort_waves`); splitting changes nothing in any run's numbers.

**Model kinds.** The engine asks of a model only a stacked objective
(:class:`~lorasweep.training.objective.StackedObjective`): hand-batched products for a single
layer (:mod:`lorasweep.training.batched_linear`), ``torch.vmap`` over ``functional_call`` for a
deep model (:mod:`lorasweep.training.batched_deep`) and for any single layer whose method or
dataset the fused products do not serve: DoRA, and a ``compat: tutorial`` dataset, whose
printed float32 losses the generic objective reproduces bitwise (the fused one rounds its
third epoch's loss to 225.9159, not the tutorial's 225.9160). Cohorts, waves, Adam, divergence
and the records are shared. ``train.engine: single`` is this engine with cohorts of one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lorasweep.options import DEEP_KINDS
from lorasweep.planning.cohorts import batchable, cohort_key, order_key
from lorasweep.planning.resources import budget_bytes, cohort_waves
from lorasweep.planning.runs import RunSpec
from lorasweep.seeding import generator
from lorasweep.tasks.synthetic import Dataset
from lorasweep.tasks.tutorial import is_tutorial
from lorasweep.training.batched_deep import StackedNetwork
from lorasweep.training.batched_linear import StackedFull, StackedLoRA
from lorasweep.training.devices import resolve_device
from lorasweep.training.exact import TEST
from lorasweep.training.loop import (
    RunResult,
    build_model,
    has_test_split,
    held_out_splits,
    model_record,
    run_result,
    starting_adapter,
)
from lorasweep.training.objective import Rows, StackedObjective
from lorasweep.training.records import (
    EpochSums,
    History,
    epoch_order,
    has_diverged,
    initial_record,
    mini_batch_bounds,
)
from lorasweep.training.stacked import StackedAdam, state_bytes

MIN_SLOTS = 2


@dataclass
class Member:
    """One run of a wave: what it records while it trains, and its result once it is done."""

    spec: RunSpec
    record: dict
    """:func:`~lorasweep.training.loop.model_record`."""
    initial_tensors: dict[str, torch.Tensor]
    trained_numels: list[int]
    history: History = field(default_factory=lambda: History(epochs=[]))
    stepped: bool = False
    result: RunResult | None = None


def memory_budget(budget_mib: float | None, device: torch.device) -> int:
    """Bytes a wave may allocate: ``train.memory_budget_mib``, else 1 GiB on the CPU and a
    quarter of the GPU's memory (:data:`lorasweep.planning.resources.DEFAULT_BUDGET_MIB`)."""
    budget = budget_bytes(budget_mib, device.type)
    if budget is None:
        budget = torch.cuda.get_device_properties(device).total_memory // 4
    return budget


def train_cohort(
    specs: Sequence[RunSpec],
    dataset: Dataset,
    device: torch.device | None = None,
    memory_budget_mib: float | None = None,
    pad_ranks: bool = False,
) -> list[RunResult]:
    """Train the runs of one cohort (one :func:`~lorasweep.planning.cohorts.cohort_key`) together,
    wave by wave within the memory budget; their results, in the order of ``specs``.
    ``pad_ranks`` lets LoRA runs of different ranks share the cohort, padded to the largest (the
    layout ``make bench`` compares with grouping by rank; see :class:`StackedLoRA`)."""
    if len({s.run_id for s in specs}) != len(specs):
        raise ValueError("a cohort lists a run twice")
    keys = {cohort_key(dataclasses.replace(s, rank=None) if pad_ranks else s) for s in specs}
    if len(keys) != 1 or not all(batchable(s, dataset.spec.as_dict()) for s in specs):
        raise ValueError("these runs do not share a cohort (lorasweep.planning.cohorts.cohort_key)")
    device = device if device is not None else resolve_device(specs[0].device)
    budget = memory_budget(memory_budget_mib, device)
    results = {}
    for wave in cohort_waves(specs, dataset.spec.as_dict(), budget):
        for result in train_wave(wave, dataset, device):
            results[result.spec.run_id] = result
    return [results[s.run_id] for s in specs]


def _member(spec: RunSpec, model: torch.nn.Module) -> Member:
    """What the run records besides its epochs, taken from its model as
    :func:`~lorasweep.training.loop.package_result` takes it."""
    return Member(
        spec=spec,
        record=model_record(spec, model),
        initial_tensors=starting_adapter(spec, model),
        trained_numels=[p.numel() for p in model.parameters() if p.requires_grad],
    )


def _objective(
    specs: Sequence[RunSpec], dataset: Dataset, device: torch.device, batch_size: int
) -> tuple[StackedObjective, StackedAdam, list[Member], list[int | None]]:
    """The wave's stacked objective and its members, one slot per run, plus a twin slot for a
    lone run."""
    models = [build_model(spec, dataset, device) for spec in specs]
    members = [_member(spec, model) for spec, model in zip(specs, models, strict=True)]
    slot_specs = list(specs)
    while len(models) < MIN_SLOTS:
        models.append(build_model(specs[0], dataset, device))
        slot_specs.append(specs[0])
    if dataset.spec.kind in DEEP_KINDS or not specs[0].record.fused or is_tutorial(dataset.spec):
        kind = StackedNetwork
    else:
        kind = StackedLoRA if specs[0].adapter else StackedFull
    objective: StackedObjective = kind(slot_specs, models, dataset, batch_size)
    adam = StackedAdam(objective.params, objective.learning_rates(slot_specs))
    owners = [*range(len(specs)), *[None] * (len(slot_specs) - len(specs))]
    return objective, adam, members, owners


def train_wave(specs: Sequence[RunSpec], dataset: Dataset, device: torch.device):
    """Train one wave's runs together and return their :class:`RunResult` s (any order)."""
    n_train = dataset["X_train"].shape[0]
    batch_size = min(specs[0].batch_size or n_train, n_train)
    objective, adam, members, owners = _objective(specs, dataset, device, batch_size)
    trainer = WaveTrainer(objective, adam, members, owners, device, dataset)
    with torch.no_grad():
        _train_epochs(trainer, specs, n_train, batch_size, device)
    return [m.result for m in members]


def _train_epochs(trainer, specs, n_train: int, batch_size: int, device: torch.device) -> None:
    """Epoch 0, then every epoch while a run is left, then the results."""
    trainer.record_initial()
    shuffles = {
        key: generator(key, "shuffle", specs[0].dataset)
        for key in {order_key(s, n_train) for s in specs}
        if key is not None
    }
    for epoch in range(1, specs[0].epochs + 1):
        if not trainer.active():
            break
        orders = {key: epoch_order(n_train, batch_size, g, device) for key, g in shuffles.items()}
        trainer.train_epoch(epoch, orders, n_train, batch_size)
    trainer.finish_all()


class WaveTrainer:
    """The epoch loop of one wave: steps, records, divergence, and the slots runs leave."""

    def __init__(
        self,
        objective: StackedObjective,
        adam: StackedAdam,
        members: list[Member],
        owners: list[int | None],
        device: torch.device,
        dataset: Dataset,
    ) -> None:
        self.objective, self.adam, self.members = objective, adam, members
        self.owners: list[int | None] = owners
        self.device = device
        self.dataset = dataset
        self.held_out = held_out_splits(dataset)
        self.columns = list(objective.norm_columns)
        self.fields = [objective.norm_columns[c] for c in self.columns]

    def active(self) -> list[int]:
        return [o for o in self.owners if o is not None]

    def _evaluate(self, splits: Sequence[str]) -> list[dict[str, float]]:
        """Per slot, ``<split>_loss`` of each split (no dropout, no gradients)."""
        losses = {f"{split}_loss": self.objective.evaluate(split).tolist() for split in splits}
        return [{name: values[slot] for name, values in losses.items()}
                for slot in range(len(self.owners))]  # fmt: skip

    def record_initial(self) -> None:
        """Epoch 0: every run's losses before any step, without gradient norms."""
        losses = self._evaluate(["train", *self.held_out])
        for slot, owner in enumerate(self.owners):
            if owner is not None:
                self.members[owner].history.epochs.append(
                    initial_record(losses[slot], self.columns)
                )

    def _slot_orders(self, orders: dict[int, torch.Tensor]) -> Rows:
        """This epoch's row order of every slot: None (every step sees the whole split in
        order), one order shared by all slots (runs of one seed), or one per slot."""
        if not orders:
            return None
        n_train = next(iter(orders.values())).shape[0]
        first = next(o for o in self.owners if o is not None)
        keys = [order_key(self.members[first if o is None else o].spec, n_train)
                for o in self.owners]  # fmt: skip
        if len(set(keys)) == 1:
            return orders[keys[0]]
        return torch.stack([orders[key] for key in keys])

    def train_epoch(self, epoch: int, orders: dict, n_train: int, batch_size: int) -> None:
        """One epoch of every active run: steps, then the held-out losses and the record."""
        start, runs_at_start = time.perf_counter(), len(self.active())
        sums = {owner: EpochSums() for owner in self.active()}
        slot_orders = self._slot_orders(orders)
        for lo, size in mini_batch_bounds(n_train, batch_size):
            rows = None if slot_orders is None else slot_orders[..., lo : lo + size]
            diverged = self._step(rows, size, sums)
            lost = {f"{split}_loss": math.nan for split in self.held_out}
            for owner in diverged:
                record = sums[owner].record(n_train, lost, self.columns)
                self._close_epoch(owner, epoch, record, start, runs_at_start, diverged=True)
            if not self.active():
                return
            if diverged:
                slot_orders = self._slot_orders(orders)
            self.adam.step()
        held_out = self._evaluate(self.held_out)
        for slot, owner in enumerate(list(self.owners)):
            if owner is None:
                continue
            record = sums[owner].record(n_train, held_out[slot], self.columns)
            self._close_epoch(owner, epoch, record, start, runs_at_start, has_diverged(record))

    def _step(self, rows: Rows, size: int, sums: dict[int, EpochSums]) -> list[int]:
        """Every run's loss and gradients on the step's rows, added to its sums; the runs whose
        loss is not finite (they take no step), the others marked as having stepped."""
        losses = self.objective.train_step(rows)
        norms = self.objective.params.grad_norms(self.fields)
        values = torch.cat([losses.unsqueeze(1), norms], 1).tolist()
        lost = []
        for owner, (loss, *slot_norms) in zip(self.owners, values, strict=True):
            if owner is None:
                continue
            norms = dict(zip(self.columns, slot_norms, strict=True))
            if sums[owner].add(loss, size, norms):
                self.members[owner].stepped = True
            else:
                lost.append(owner)
        return lost

    def _close_epoch(self, owner, epoch, record, start, runs_at_start, diverged: bool) -> None:
        """Append the epoch's record; a diverged run is finished and leaves the wave. Each run
        is charged the wave's wall time so far divided by the runs it started the epoch with."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        member = self.members[owner]
        member.history.epochs.append({"epoch": epoch, **record})
        member.history.epoch_seconds.append((time.perf_counter() - start) / runs_at_start)
        if diverged:
            member.history.diverged_epoch = epoch
            self._finish(owner)
            self._leave(owner)

    def _leave(self, owner: int) -> None:
        """Drop the run's slot (and a twin of it); keep at least :data:`MIN_SLOTS` slots by
        twinning a lone survivor."""
        keep = [s for s, o in enumerate(self.owners) if o is not None and o != owner]
        if not keep:
            self.owners = []
            return
        while len(keep) < MIN_SLOTS:
            keep.append(keep[0])
        index = torch.tensor(keep, device=self.device)
        self.objective.keep(index)
        self.adam.keep(index)
        self.owners = [self.owners[s] if i == keep.index(s) else None for i, s in enumerate(keep)]

    def finish_all(self) -> None:
        """Finish the runs that trained to the end, with the test losses of their final
        weights from one evaluation of the wave."""
        active = self.active()
        tests = None
        if active and has_test_split(self.dataset):
            tests = self.objective.evaluate(TEST).tolist()
        for owner in active:
            self._finish(owner, tests)

    def _finish(self, owner: int, test_losses: list[float] | None = None) -> None:
        """The run's result; ``test_losses``, one per slot, are needed where it trained to the
        end on a dataset with a test split."""
        member = self.members[owner]
        slot = self.owners.index(owner)
        member.result = run_result(
            member.spec,
            member.history,
            member.record,
            self.objective.tensors(slot),
            member.initial_tensors,
            state_bytes(member.trained_numels, member.stepped),
            self.device,
            self.objective.cached_base,
            self.dataset,
            lambda: test_losses[slot],
        )
