"""The losses of many runs of one deep network at once (``mlp``, ``transformer``): the batched
counterpart of :func:`lorasweep.training.loop.reference_loss` for a network.

Each run's model is built by :func:`~lorasweep.training.loop.build_model`, so its init is the
single-run path's. The tensors it trains (every A and B of its LoRA modules, and their biases
where they train; every parameter for full fine-tuning) are copied into its slot of a
:class:`~lorasweep.training.stacked.StackedParameters`, under their parameter names. One
template network, with each LoRA module's scale s made a buffer, computes every run's
``mse_loss(model(x), y)`` and its gradients in one program: ``torch.vmap`` of
``torch.func.grad_and_value`` of ``torch.func.functional_call`` over the slots. The frozen
tensors (the base network) are passed once, shared by the runs, except PiSSA's W₀ − s·B₀A₀ of
each adapted module, which is each run's own and stacked too.

Every run's rows are gathered into a (runs, b, …) input, also where runs share their rows, so
that a run's products have the same operands whichever runs share its cohort. With dropout, each
LoRA module's mask is drawn outside the vmapped program, per run from the module's own
generator in the shape :meth:`~lorasweep.models.lora.LoRALinear.adapter_input` draws it, and
passed in as a buffer of the template.

**Exactness.** The per-epoch losses equal :func:`~lorasweep.training.loop.train_run`'s within
1e-5 relative for well-conditioned runs, and at epoch 0 for every run, under the conditions
:mod:`lorasweep.training.batched` states. A run's numbers are **bitwise** the same whichever runs
share its cohort and however it is split into waves, at one thread (tested): every tensor a run
uses is either shared by the whole wave or its own slice, and which is which depends only on the
cohort key.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from lorasweep.models import registry
from lorasweep.models.dora import DoRALinear
from lorasweep.models.lora import LoRALinear, dropout_keep, lora_layers
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.synthetic import Dataset
from lorasweep.training.batched_linear import copy_generator, kept_slots
from lorasweep.training.exact import splits_of
from lorasweep.training.loop import adapter_tensors, tracked_gradients
from lorasweep.training.objective import Rows
from lorasweep.training.records import slot_rates
from lorasweep.training.stacked import SlotLayout, StackedParameters


def trained_names(spec: RunSpec, model: nn.Module) -> dict[str, str]:
    """The tensors a run stores (:func:`~lorasweep.training.loop.package_result`), each mapped
    to the name of the parameter it is."""
    stored = adapter_tensors(model, spec.bias) if spec.adapter else dict(model.named_parameters())
    names = {id(p): name for name, p in model.named_parameters()}
    return {key: names[id(value)] for key, value in stored.items()}


class MaskedLoRALinear(LoRALinear):
    """A LoRA module of the template: its dropout mask is the ``dropout_keep`` buffer (each
    run's, passed in with its parameters), and none where the buffer is unset."""

    def adapter_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout_keep is None:
            return x
        return x * self.dropout_keep / (1.0 - self.dropout)


class MaskedDoRALinear(DoRALinear):
    """A DoRA module of the template, its dropout mask passed in as :class:`MaskedLoRALinear`'s."""

    adapter_input = MaskedLoRALinear.adapter_input


MASKED = {LoRALinear: MaskedLoRALinear, DoRALinear: MaskedDoRALinear}
"""Each adapter layer class → its template class."""


def _key(module: str, name: str) -> str:
    """A tensor's name in ``functional_call``: ``module.name``, or ``name`` where the module is
    the model itself (a single layer)."""
    return f"{module}.{name}" if module else name


def _template(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose LoRA modules hold s as a ``scaling`` buffer and their dropout
    mask as a ``dropout_keep`` buffer, so that each run passes its own. It holds no data (every
    tensor it uses is passed in), so it lives on the meta device."""
    template = copy.deepcopy(model)
    for _, layer in lora_layers(template):
        scale = torch.tensor(layer.scaling, dtype=layer.lora_A.dtype, device=layer.lora_A.device)
        del layer.scaling
        layer.register_buffer("scaling", scale)
        layer.__class__ = MASKED[type(layer)]
        layer.register_buffer("dropout_keep", None)
        layer.dropout_generator = None
    return template.to("meta")


class StackedNetwork:
    """R runs of one deep network, LoRA (one ``targets`` and rank) or full fine-tuning."""

    cached_base = False

    def __init__(
        self,
        specs: Sequence[RunSpec],
        models: Sequence[nn.Module],
        dataset: Dataset,
        batch_size: int,
    ) -> None:
        first = models[0]
        device = next(first.parameters()).device
        self.stored = trained_names(specs[0], first)
        trainable = [n for n, p in first.named_parameters() if p.requires_grad]
        shapes = {name: first.get_parameter(name).shape for name in trainable}
        self.params = StackedParameters(SlotLayout.of(shapes), len(models), device)
        with torch.no_grad():
            for slot, model in enumerate(models):
                for name in trainable:
                    self.params[name][slot] = model.get_parameter(name)
        self.template = _template(first)
        self.shared, self.per_run = self._frozen(specs, models, set(trainable))
        norms = tracked_gradients(specs[0], first)
        names = {id(p): n for n, p in first.named_parameters()}
        self.norm_columns = {
            column: tuple(names[id(p)] for p in params) for column, params in norms.items()
        }
        self.data = {
            split: (dataset[f"X_{split}"].to(device), dataset[f"y_{split}"].to(device))
            for split in splits_of(dataset.tensors)
        }
        self.dropout = specs[0].dropout if specs[0].adapter else 0.0
        self.adapted = [(name, layer.in_features) for name, layer in lora_layers(first)]
        self.dropout_generators = [
            [layer.dropout_generator for _, layer in lora_layers(model)] for model in models
        ]
        self._value_and_grad = torch.vmap(grad_and_value(self._loss), in_dims=(0, 0, 0, 0))
        self._value = torch.vmap(self._loss, in_dims=(0, 0, 0, 0))

    @staticmethod
    def _frozen(specs, models, trainable: set[str]) -> tuple[dict, dict]:
        """The frozen tensors every run holds alike, once, and those of each run, stacked
        (runs, …): each LoRA module's s, and with PiSSA the adapted modules' base weights. Which
        tensors are stacked depends on the cohort's key alone, never on the values, so that a
        run's program is the same whichever runs share its cohort."""
        own = {_key(name, "scaling") for name, _ in lora_layers(models[0])}
        if specs[0].adapter and registry.replaces_base(specs[0].init):
            own |= {_key(name, "base.weight") for name, _ in lora_layers(models[0])}
        held = []
        for model in models:
            tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
            for name, layer in lora_layers(model):
                tensors[_key(name, "scaling")] = torch.tensor(
                    layer.scaling, dtype=layer.lora_A.dtype
                )
            held.append({k: v.detach() for k, v in tensors.items() if k not in trainable})
        device = next(models[0].parameters()).device
        shared, per_run = {}, {}
        for name, value in held[0].items():
            if name in own:
                per_run[name] = torch.stack([tensors[name] for tensors in held]).to(device)
            else:
                shared[name] = value
        return shared, per_run

    def _loss(self, trained, per_run, x, y):
        out = functional_call(self.template, {**self.shared, **per_run, **trained}, (x,))
        return nn.functional.mse_loss(out, y)

    @property
    def runs(self) -> int:
        return self.params.runs

    def learning_rates(self, specs: Sequence[RunSpec]) -> dict[str, list[float]]:
        """Each trained tensor's rate by its method record's ``lr_groups`` (A, m and biases at
        lr, B at lr·λ; every parameter at lr for full fine-tuning), as
        :func:`~lorasweep.training.loop.param_groups` gives them."""
        return slot_rates(specs, {name: name for name in self.params.layout.shapes})

    def _rows(self, split: str, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(runs, b, …) inputs and targets of each run's rows."""
        runs = self.runs
        pair = []
        for tensor in self.data[split]:
            if rows is None:
                picked = tensor.expand(runs, *tensor.shape)
            elif rows.dim() == 1:
                picked = tensor[rows].expand(runs, len(rows), *tensor.shape[1:])
            else:
                picked = tensor[rows]
            pair.append(picked.contiguous())
        return pair[0], pair[1]

    def _trained(self) -> dict[str, torch.Tensor]:
        return dict(self.params.tensors)

    def train_step(self, rows: Rows) -> torch.Tensor:
        """Each run's loss on its rows (float64), with its gradients written into its slot."""
        x, y = self._rows("train", rows)
        per_run = {**self.per_run, **self._masks(x.shape[1:-1])} if self.dropout else self.per_run
        grads, losses = self._value_and_grad(self._trained(), per_run, x, y)
        for name, grad in grads.items():
            self.params.grad_of(name).copy_(grad)
        return losses.double()

    def _masks(self, leading: torch.Size) -> dict[str, torch.Tensor]:
        """Each LoRA module's keep-mask of this step, (runs, *leading, d_in): every run's drawn
        from its module's own generator, as :meth:`LoRALinear.adapter_input` draws it."""
        masks = {}
        dtype, device = self.params.data.dtype, self.params.data.device
        for index, (name, d_in) in enumerate(self.adapted):
            shape = (*leading, d_in)
            keeps = [dropout_keep(shape, generators[index], self.dropout)
                     for generators in self.dropout_generators]  # fmt: skip
            masks[_key(name, "dropout_keep")] = torch.stack(keeps).to(device, dtype)
        return masks

    def evaluate(self, split: str) -> torch.Tensor:
        """Each run's loss on a whole split."""
        x, y = self._rows(split, None)
        return self._value(self._trained(), self.per_run, x, y).double()

    def keep(self, index: torch.Tensor) -> None:
        """Keep the per-run frozen tensors, scales and dropout generators of the runs at
        ``index`` (a twin gets a copy of its run's generators)."""
        self.per_run = {k: v.index_select(0, index) for k, v in self.per_run.items()}
        self.dropout_generators = kept_slots(
            self.dropout_generators, index, lambda own: [copy_generator(g) for g in own]
        )

    def tensors(self, slot: int) -> dict[str, torch.Tensor]:
        """The run's trained tensors under the names the single-run path stores them by."""
        return {
            key: self.params[name][slot].detach().cpu().clone() for key, name in self.stored.items()
        }
