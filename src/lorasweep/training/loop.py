"""Train one run: LoRA or full fine-tuning of the dataset's base layer, with Adam and MSE.

:func:`train_run` reads top to bottom: build the model, choose its loss, build the optimizer,
record epoch 0, train epoch by epoch until the end or a divergence, and package the result.

Randomness comes from seeded generators, one per purpose, derived from the run's seed:
``init`` (adapter initialisation; shared by runs of the same seed and rank, so α, scaling and lr
comparisons are paired), ``shuffle`` (mini-batch order; shared by every run of the seed) and
``dropout``. The global RNG is never used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lorasweep.models import networks, registry
from lorasweep.models.accounting import ParameterCounts, count_parameters
from lorasweep.models.adapters import layer_class, stored_update
from lorasweep.models.lora import is_adapter_layer, lora_layers
from lorasweep.models.names import linear_modules, matrix_types, select
from lorasweep.options import DEEP_KINDS
from lorasweep.planning.runs import RunSpec
from lorasweep.seeding import generator
from lorasweep.tasks import population, tutorial
from lorasweep.tasks.synthetic import Dataset, GroundTruth
from lorasweep.training.devices import device_name, resolve_device
from lorasweep.training.exact import (
    SOURCE,
    TEST,
    LossFn,
    Splits,
    cached_loss,
    can_cache_base,
    splits_of,
    trains_on_base_residuals,
)
from lorasweep.training.records import (
    EpochSums,
    History,
    epoch_order,
    has_diverged,
    initial_record,
    mini_batch_bounds,
    tensor_rate,
)
from lorasweep.training.stacked import state_bytes


def build_model(spec: RunSpec, dataset: Dataset, device: torch.device) -> nn.Module:
    """The dataset's base layer (W₀, b₀), wrapped in LoRA or left fully trainable; for the deep
    kinds, :func:`build_network_model`.

    Full fine-tuning trains a copy of W₀. LoRA never writes to W₀ (PiSSA and merging replace
    the base weight instead), so it wraps the dataset's tensor itself: runs of one job share a
    single W₀ rather than holding one copy each. Where the job released W₀ after caching the
    residuals (:func:`cache_base_residuals`), the frozen weight is a meta tensor.
    """
    if dataset.spec.kind in DEEP_KINDS:
        return build_network_model(spec, dataset, device)
    d_in, d_out = dataset.spec.in_features, dataset.spec.out_features
    full = not spec.adapter
    base = nn.Linear(d_in, d_out, device="meta")
    if "W0" in dataset.tensors:
        base.weight = nn.Parameter(dataset["W0"].to(device, copy=full), requires_grad=full)
    elif not trains_on_base_residuals(spec):
        raise ValueError(f"{spec.run_id}: needs W₀, which this job released")
    base.bias = nn.Parameter(dataset["b0"].to(device, copy=True))
    if full:
        return base
    layer = lora_layer(spec, base, device)
    if registry.init(spec.init).tutorial_draws and tutorial.is_tutorial(dataset.spec):
        tutorial.initialise_adapter(layer, dataset.spec)
        if spec.record.magnitude:
            layer.reset_magnitude()
    return layer


def lora_layer(spec: RunSpec, base: nn.Linear, device: torch.device, name: str = "") -> nn.Module:
    """The run's adapter layer around ``base``, of its method's class
    (:mod:`~lorasweep.models.adapters`). Initialisation is seeded by the run's seed, dataset and
    rank (and, in a network, the module's name), so runs that differ only in α, scaling, learning
    rate or targets start from the same adapter on each module."""
    module = (name,) if name else ()
    return layer_class(spec.method)(
        base,
        rank=spec.rank,
        alpha=spec.alpha,
        scaling=spec.scaling,
        init=spec.init,
        bias=spec.bias,
        dropout=spec.dropout,
        generator=generator(spec.seed, "init", spec.dataset, spec.rank, *module),
        dropout_generator=generator(spec.seed, "dropout", spec.run_id, *module),
        device=device,
    )


def adapted_modules(spec: RunSpec, dataset: Dataset) -> list[str]:
    """The linear modules of a deep dataset's network that the run changes: those its
    ``targets`` select for LoRA, every one for full fine-tuning."""
    modules = linear_modules(dataset.spec.as_dict())
    chosen = modules if not spec.adapter else select(modules, spec.targets)
    return [m.name for m in chosen]


def build_network_model(spec: RunSpec, dataset: Dataset, device: torch.device) -> nn.Module:
    """The dataset's base network f₀ (a copy), every parameter trainable for full fine-tuning,
    or frozen with a LoRA wrapper on each module the run's ``targets`` select."""
    network = networks.load_base(dataset, device)
    if spec.adapter:
        networks.add_lora(
            network,
            adapted_modules(spec, dataset),
            lambda name, base: lora_layer(spec, base, device, name),
        )
    return network


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def adapter_tensors(model: nn.Module, bias: str) -> dict[str, torch.Tensor]:
    """Each adapter layer's ``lora_A``, ``lora_B``, DoRA's ``magnitude`` (and ``bias`` where it
    trains), under the layer's name (``blocks.0.mlp.up.lora_A``; plain ``lora_A`` for a single
    layer)."""
    tensors = {}
    for name, layer in lora_layers(model):
        tensors[f"{_prefix(name)}lora_A"] = layer.lora_A
        tensors[f"{_prefix(name)}lora_B"] = layer.lora_B
        if layer.method_record.magnitude:
            tensors[f"{_prefix(name)}magnitude"] = layer.magnitude
        if bias == "lora_only":
            tensors[f"{_prefix(name)}bias"] = layer.base.bias
    return tensors


def starting_adapter(spec: RunSpec, model: nn.Module) -> dict[str, torch.Tensor]:
    """A₀ and B₀ as ``lora_A_init``/``lora_B_init`` where the frozen base is W₀ − s·B₀A₀
    (:data:`RESIDUAL_BASE_INITS`), so that later stages rebuild the run's base and its change
    from W₀ from the run folder instead of recomputing PiSSA's SVD; empty for every other run."""
    if not spec.adapter or not registry.replaces_base(spec.init):
        return {}
    return {
        f"{key}_init": value.detach().to("cpu", copy=True)
        for key, value in adapter_tensors(model, "none").items()
    }


def reference_loss(model: nn.Module, data: Splits) -> LossFn:
    """The loss every run minimises, ``mse_loss(model(x), y)`` of a mini-batch, by autograd: the
    reference the exact fast paths of :mod:`lorasweep.training.exact` are held to."""

    def loss(split: str, index: torch.Tensor | None = None, backward: bool = False) -> float:
        x, y = data[split]
        if index is not None:
            x, y = x[index], y[index]
        value = nn.functional.mse_loss(model(x), y)
        if backward:
            value.backward()
        return float(value.detach())

    return loss


def choose_loss(
    spec: RunSpec,
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    use_cache: bool | None,
) -> tuple[LossFn, bool]:
    """The run's loss, and whether it is an exact fast path (:func:`cached_loss`) rather than
    :func:`reference_loss`.

    ``use_cache=None`` takes the fast path wherever :func:`can_cache_base` says it is exact,
    except on a ``compat: tutorial`` dataset, whose runs compute the tutorial's float32 loss;
    residuals the job cached in ``dataset`` (:func:`cache_base_residuals`) are used rather than
    recomputed.
    """
    if use_cache is None:
        use_cache = can_cache_base(model) and not tutorial.is_tutorial(dataset.spec)
    elif use_cache and not can_cache_base(model):
        raise ValueError("W₀x can only be cached for a single unmerged LoRA layer")
    tensors = dataset.tensors
    data = {
        split: (
            tensors[f"X_{split}"].to(device),
            tensors[f"y_{split}"].to(device) if f"y_{split}" in tensors else None,
        )
        for split in splits_of(tensors)
    }
    residuals = None
    if use_cache and trains_on_base_residuals(spec) and "r_train" in tensors:
        residuals = {split: tensors[f"r_{split}"].to(device) for split in data}
    elif data["train"][1] is None:
        raise ValueError(f"{spec.run_id}: needs the targets y, which this job replaced by y − W₀x")
    if use_cache:
        return cached_loss(model, data, batch_size, residuals), True
    return reference_loss(model, data), False


def param_groups(spec: RunSpec, model: nn.Module) -> list[dict]:
    """Adam's parameter groups, at the rates of the method record's ``lr_groups``: an adapter's
    A at lr, B at lr·λ (LoRA+, Hayou et al. 2024, arXiv 2402.12354; λ = ``lr_ratio``), DoRA's m
    at lr, plus the adapted layers' biases at lr where they train (one group per rate, each
    trained parameter at :func:`~lorasweep.training.records.tensor_rate`). Full fine-tuning:
    every parameter at lr."""
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = name.rpartition(".")[2]
            group = groups.setdefault(kind, {"params": [], "lr": tensor_rate(spec, name)})
            group["params"].append(param)
    return list(groups.values())


def tracked_gradients(spec: RunSpec, model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters whose gradient norm each epoch records, by column name: every A and
    every B for LoRA, every linear weight for full fine-tuning (one each in a single layer)."""
    if spec.adapter:
        layers = [layer for _, layer in lora_layers(model)]
        return {
            "grad_norm_A": [layer.lora_A for layer in layers],
            "grad_norm_B": [layer.lora_B for layer in layers],
        }
    return {"grad_norm_W": [m.weight for m in model.modules() if isinstance(m, nn.Linear)]}


def evaluate(model: nn.Module, loss: LossFn, split: str) -> float:
    """The loss on a whole split, in eval mode and without gradients."""
    model.eval()
    with torch.no_grad():
        return loss(split)


def held_out_splits(dataset: Dataset) -> tuple[str, ...]:
    """The splits evaluated after every epoch: val, and the source task's where there is one
    (never the test split, which only the final weights see)."""
    return tuple(split for split in splits_of(dataset.tensors) if split not in ("train", TEST))


def has_test_split(dataset: Dataset) -> bool:
    return TEST in splits_of(dataset.tensors)


def final_test_loss(dataset: Dataset, status: str, evaluate_test) -> float | None:
    """The test loss of a run's final weights, ``evaluate_test()``; NaN for a diverged run, as
    its final validation loss, and None where the dataset has no test split."""
    if not has_test_split(dataset):
        return None
    return evaluate_test() if status == "ok" else math.nan


def population_loss(
    spec: RunSpec,
    dataset: Dataset,
    status: str,
    tensors: dict[str, torch.Tensor],
    initial_tensors: dict[str, torch.Tensor],
    scaling: float | None,
) -> float | None:
    """The exact population risk of a run's final weights on a ``lowrank`` dataset
    (:func:`lorasweep.tasks.population.update_risk`); NaN for a diverged run, None for every
    other kind."""
    if not population.has_population_risk(dataset):
        return None
    if status != "ok":
        return math.nan
    if not spec.adapter:
        update = tensors["weight"].double().cpu() - dataset["W0"].double().cpu()
    else:
        update = stored_update(
            spec.method,
            dataset.tensors.get("W0"),
            tensors,
            "",
            scaling,
            initial_tensors.get("lora_A_init"),
            initial_tensors.get("lora_B_init"),
        )
    return population.update_risk(dataset, update, tensors.get("bias"))


def evaluate_held_out(model: nn.Module, loss: LossFn, splits: tuple[str, ...]) -> dict:
    """``val_loss`` (and ``source_loss``): the loss on each held-out split."""
    return {f"{split}_loss": evaluate(model, loss, split) for split in splits}


def initial_losses(
    model: nn.Module, loss: LossFn, norms: dict[str, list[nn.Parameter]], held_out: tuple[str, ...]
) -> dict:
    """Epoch 0 of the model before any step (:func:`~lorasweep.training.records.initial_record`)."""
    losses = {
        "train_loss": evaluate(model, loss, "train"),
        **evaluate_held_out(model, loss, held_out),
    }
    return initial_record(losses, list(norms))


def mini_batches(
    n_train: int, batch_size: int, shuffle: torch.Generator, device: torch.device
) -> list[tuple[torch.Tensor | None, int]]:
    """One epoch's mini-batches as (row index, size): a fresh permutation from ``shuffle`` when
    there is more than one mini-batch, else the whole split in order (index ``None``)."""
    order = epoch_order(n_train, batch_size, shuffle, device)
    return [
        (order[lo : lo + size] if order is not None else None, size)
        for lo, size in mini_batch_bounds(n_train, batch_size)
    ]


def _grad_norm(params: list[nn.Parameter]) -> float:
    """‖∇‖ of one parameter, or the norm of the gradients of several taken together."""
    norms = [float(p.grad.norm()) if p.grad is not None else 0.0 for p in params]
    return norms[0] if len(norms) == 1 else math.sqrt(sum(n * n for n in norms))


def train_epoch(
    model: nn.Module,
    loss: LossFn,
    optimizer: torch.optim.Optimizer,
    norms: dict[str, list[nn.Parameter]],
    epoch_mini_batches: list[tuple[torch.Tensor | None, int]],
    held_out: tuple[str, ...],
    after_step=None,
) -> tuple[dict, bool]:
    """One Adam step per mini-batch, then the loss on each ``held_out`` split; returns the epoch's
    record (:class:`~lorasweep.training.records.EpochSums`) and whether the run diverged. A
    non-finite mini-batch loss ends the epoch before its step. ``after_step()``, where given,
    runs after every step (AdaLoRA's rank allocation)."""
    model.train()
    sums = EpochSums()
    for index, size in epoch_mini_batches:
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss("train", index, backward=True)
        step_norms = (
            {name: _grad_norm(params) for name, params in norms.items()}
            if math.isfinite(loss_value)
            else {}
        )
        if not sums.add(loss_value, size, step_norms):
            break
        optimizer.step()
        if after_step is not None:
            after_step()
    if sums.finite:
        held = evaluate_held_out(model, loss, held_out)
    else:
        held = {f"{split}_loss": math.nan for split in held_out}
    record = sums.record(sum(size for _, size in epoch_mini_batches), held, list(norms))
    return record, has_diverged(record)


def gap_to_optimal(loss: float, optimal: float) -> float | None:
    """How far ``loss`` is above the theoretical optimum, relative to it: loss / optimal − 1.

    None where the optimum is 0 (noise σ = 0 and an update that can reach the truth: r ≥ the
    task rank, or full fine-tuning); a relative gap to 0 is undefined, and the loss is itself
    the absolute gap.
    """
    return loss / optimal - 1.0 if optimal > 0 else None


@dataclass
class RunResult:
    """What one run produced, as :func:`lorasweep.jobs.run_folder.write_run` stores it."""

    spec: RunSpec
    status: str
    diverged_epoch: int | None
    epochs: list[dict]
    counts: ParameterCounts
    train_state_bytes: int
    tensors: dict[str, torch.Tensor] = field(repr=False)
    device: str
    device_name: str
    epoch_seconds: list[float]
    cached_base: bool
    scaling: float | None = None
    initial_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """The adapter's starting point, stored beside ``tensors`` (:func:`starting_adapter`)."""
    adapted: tuple[str, ...] | None = None
    """The linear modules a deep model's run changed, in forward order (None for one layer)."""
    base_weight: torch.Tensor | None = field(default=None, repr=False)
    """The frozen weight a PiSSA adapter was trained against (W₀ − s·B₀A₀); None otherwise."""
    test_loss: float | None = None
    """:func:`final_test_loss`."""
    population_loss: float | None = None
    """:func:`population_loss`."""
    delta_weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """A PEFT-trained run's merged change of each adapted module, stored beside ``tensors``
    (:data:`~lorasweep.models.adapters.DELTA_WEIGHT`); empty otherwise."""
    peft_files: dict[str, bytes] = field(default_factory=dict, repr=False)
    """A PEFT-trained run's ``save_pretrained`` files, written as its ``peft/`` folder."""

    @property
    def final(self) -> dict:
        return self.epochs[-1]

    @property
    def best_val_loss(self) -> float:
        finite = [e["val_loss"] for e in self.epochs if math.isfinite(e["val_loss"])]
        return min(finite) if finite else math.nan

    def summary(self, truth: GroundTruth | None) -> dict:
        """Per-run metrics as stored in ``metrics.json`` (no wall-clock times); a deep model's
        run also records how many modules it changed and their matrix types."""
        spec = self.spec
        optimal = noise = gap = None
        deep = {}
        if self.adapted is not None:
            types = "+".join(matrix_types(self.adapted))
            deep = {"adapted_modules": len(self.adapted), "adapted_types": types}
        if truth is not None:
            rank = spec.record.update_rank(spec.rank)
            bias_trains = not spec.adapter or spec.bias == "lora_only"
            if self.adapted is None:
                optimal = truth.optimal_loss(rank, bias_trains)
            else:
                optimal = truth.optimal_loss(rank, bias_trains, self.adapted)
            noise = truth.noise_floor
            if self.status == "ok" and optimal is not None:
                gap = gap_to_optimal(self.final["val_loss"], optimal)
        return {
            **deep,
            **spec.as_dict(),
            "trainable_params": self.counts.trainable,
            "frozen_params": self.counts.frozen,
            "total_params": self.counts.total,
            "adapter_params": self.counts.adapter,
            "train_state_bytes": self.train_state_bytes,
            "final_train_loss": self.final["train_loss"],
            "final_val_loss": self.final["val_loss"],
            "final_test_loss": self.test_loss,
            "population_loss": self.population_loss,
            "best_val_loss": self.best_val_loss,
            "initial_val_loss": self.epochs[0]["val_loss"],
            "status": self.status,
            "diverged_epoch": self.diverged_epoch,
            "optimal_val_loss": optimal,
            "noise_floor": noise,
            "gap_to_optimal": gap,
            "device_type": self.device,
            "cached_base": self.cached_base,
            **self.forgetting(),
        }

    def forgetting(self) -> dict:
        """Where the dataset has a source task: its final loss, and ``forgetting``, the source
        loss after fine-tuning minus before (epoch 0); empty otherwise."""
        key = f"{SOURCE}_loss"
        if key not in self.epochs[0]:
            return {}
        before, after = self.epochs[0][key], self.final[key]
        return {"final_source_loss": after, "forgetting": after - before}


def model_record(spec: RunSpec, model: nn.Module) -> dict:
    """What a run records from its model besides its epochs and tensors: its parameter counts,
    the LoRA scale s, a network's adapted modules (every linear module for full fine-tuning) and
    a single PiSSA layer's frozen base W₀ − s·B₀A₀ (on the CPU)."""
    layers = list(lora_layers(model))
    adapted = None
    if isinstance(model, networks.DeepNetwork):
        adapted = tuple(name for name, _ in layers) or tuple(networks.linear_names(model))
    single_pissa = registry.replaces_base(spec.init) and is_adapter_layer(model)
    return {
        "counts": count_parameters(model),
        "scaling": layers[0][1].scaling if layers else None,
        "adapted": adapted,
        "base_weight": model.base.weight.detach().cpu() if single_pissa else None,
    }


def run_result(
    spec: RunSpec,
    history: History,
    record: dict,
    tensors: dict[str, torch.Tensor],
    initial_tensors: dict[str, torch.Tensor],
    train_state_bytes: int,
    device: torch.device,
    cached_base: bool,
    dataset: Dataset,
    evaluate_test,
    population_tensors: dict[str, torch.Tensor] | None = None,
) -> RunResult:
    """A run's :class:`RunResult`, whichever code trained it: its history, its
    :func:`model_record`, its final ``tensors`` (on the CPU) with the adapter's starting point,
    and their test loss (``evaluate_test()``, see :func:`final_test_loss`) and population
    loss (of ``population_tensors`` where given: a PEFT-trained run's merged changes)."""
    status = "ok" if history.diverged_epoch is None else "diverged"
    return RunResult(
        spec=spec,
        status=status,
        diverged_epoch=history.diverged_epoch,
        epochs=history.epochs,
        train_state_bytes=train_state_bytes,
        tensors=tensors,
        device=device.type,
        device_name=device_name(device),
        epoch_seconds=history.epoch_seconds,
        cached_base=cached_base,
        initial_tensors=initial_tensors,
        test_loss=final_test_loss(dataset, status, evaluate_test),
        population_loss=population_loss(
            spec,
            dataset,
            status,
            tensors if population_tensors is None else population_tensors,
            initial_tensors,
            record["scaling"],
        ),
        **record,
    )


def package_result(
    spec: RunSpec,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    history: History,
    cached_base: bool,
    initial_tensors: dict[str, torch.Tensor],
    dataset: Dataset,
    loss: LossFn,
) -> RunResult:
    """The oracle's :func:`run_result`. Full fine-tuning stores every parameter (``weight`` and
    ``bias`` of a single layer; a network's whole state dict); the state bytes are those of
    :func:`~lorasweep.training.stacked.state_bytes` for the tensors Adam trained."""
    tensors = adapter_tensors(model, spec.bias) if spec.adapter else dict(model.named_parameters())
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    return run_result(
        spec,
        history,
        model_record(spec, model),
        tensors,
        initial_tensors,
        state_bytes(numels, stepped=bool(optimizer.state)),
        device,
        cached_base,
        dataset,
        lambda: evaluate(model, loss, TEST),
    )


def train_epochs(
    epochs: int,
    model: nn.Module,
    loss: LossFn,
    optimizer: torch.optim.Optimizer,
    norms: dict[str, list[nn.Parameter]],
    batches: tuple[int, int, torch.Generator],
    device: torch.device,
    held_out: tuple[str, ...],
    after_step=None,
) -> History:
    """Epoch 0 of the model before any step, then up to ``epochs`` :func:`train_epoch` s, each
    timed to the end of its held-out losses; a divergence stops the run and is recorded.
    ``batches`` is (n_train, mini-batch size, the run's shuffle generator)."""
    n_train, batch_size, shuffle = batches
    history = History(epochs=[initial_losses(model, loss, norms, held_out)])
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        record, diverged = train_epoch(
            model,
            loss,
            optimizer,
            norms,
            mini_batches(n_train, batch_size, shuffle, device),
            held_out,
            after_step,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        history.epoch_seconds.append(time.perf_counter() - start)
        history.epochs.append({"epoch": epoch, **record})
        if diverged:
            history.diverged_epoch = epoch
            break
    return history


def train_run(
    spec: RunSpec,
    dataset: Dataset,
    device: torch.device | None = None,
    use_cache: bool | None = None,
) -> RunResult:
    """Train one run and return its per-epoch record, counts and final weights.

    Epoch 0 is the model before any step; every later epoch is one :func:`train_epoch`, timed
    to the end of its held-out losses (validation, and the source task's where there is one);
    the test split is evaluated once, on the final weights. A divergence stops the run with
    ``status="diverged"``. ``use_cache`` picks the loss (:func:`choose_loss`).
    """
    device = device if device is not None else resolve_device(spec.device)
    model = build_model(spec, dataset, device)
    initial_tensors = starting_adapter(spec, model)
    n_train = dataset["X_train"].shape[0]
    batch_size = min(spec.batch_size or n_train, n_train)
    loss, cached_base = choose_loss(spec, model, dataset, batch_size, device, use_cache)
    optimizer = torch.optim.Adam(param_groups(spec, model))
    norms = tracked_gradients(spec, model)
    shuffle = generator(spec.seed, "shuffle", spec.dataset)

    held_out = held_out_splits(dataset)
    history = train_epochs(
        spec.epochs, model, loss, optimizer, norms, (n_train, batch_size, shuffle), device, held_out
    )
    return package_result(
        spec, model, optimizer, device, history, cached_base, initial_tensors, dataset, loss
    )
