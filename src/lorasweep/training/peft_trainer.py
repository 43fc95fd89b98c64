"""Train one run of a method through real PEFT: ``get_peft_model`` on the dataset's base, Adam
(or the method's PEFT optimizer), the same loss, epochs, mini-batches and records as the engine.

A method of :data:`lorasweep.models.registry.PEFT_RECORDS` trains here, one run at a time: the
engine stacks runs whose modules it owns, and PEFT's tuners keep per-module state (AdaLoRA's
rank allocator, VeRA's shared projections) that a stacked program would have to rebuild.

Randomness: PEFT initialises its adapters from torch's global generator, so the wrap runs
inside :func:`torch.random.fork_rng` seeded from the run's ``init`` seed (the same for runs that
differ only in learning rate); mini-batches come from the run's ``shuffle`` generator, as in the
engine, so runs of one seed see the same batches whatever their method.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lorasweep.models import networks, peft_format, registry
from lorasweep.models.accounting import ParameterCounts
from lorasweep.models.adapters import DELTA_WEIGHT
from lorasweep.options import DEEP_KINDS
from lorasweep.planning.runs import RunSpec
from lorasweep.seeding import derive_seed, generator
from lorasweep.tasks.synthetic import Dataset
from lorasweep.training.exact import TEST, splits_of
from lorasweep.training.loop import (
    RunResult,
    adapted_modules,
    evaluate,
    held_out_splits,
    reference_loss,
    run_result,
    train_epochs,
)
from lorasweep.training.stacked import state_bytes

SAVED_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What a run keeps of ``save_pretrained``'s output as its ``peft/`` folder (PEFT also writes
a model card, which holds nothing of the run)."""


def base_model(dataset: Dataset, device: torch.device) -> nn.Module:
    """The dataset's base as PEFT wraps it: a deep dataset's network f₀, or its single layer
    as :class:`~lorasweep.models.peft_format.BaseModel` (one ``nn.Linear`` named ``layer``)."""
    if dataset.spec.kind in DEEP_KINDS:
        return networks.load_base(dataset, device)
    model = peft_format.BaseModel(dataset.spec.in_features, dataset.spec.out_features)
    with torch.no_grad():
        model.layer.weight.copy_(dataset["W0"])
        model.layer.bias.copy_(dataset["b0"])
    return model.to(device)


def target_modules(spec: RunSpec, dataset: Dataset) -> list[str]:
    """The modules the run adapts: those its ``targets`` select in a deep network, else the
    single layer."""
    if dataset.spec.kind in DEEP_KINDS:
        return adapted_modules(spec, dataset)
    return ["layer"]


def total_steps(spec: RunSpec, n_train: int) -> int:
    batch_size = min(spec.batch_size or n_train, n_train)
    return spec.epochs * math.ceil(n_train / batch_size)


def peft_config(spec: RunSpec, targets: list[str], n_train: int):
    """The run's PEFT config: its method's class with the run's rank and α, the method's
    defaults and the config's ``method_settings``, on ``targets``. AdaLoRA gets its schedule's
    ``total_step`` and, unless set, ``init_r`` = ⌈1.5·r⌉ (PEFT's default ratio 12 : 8); IA3 gets
    ``feedforward_modules`` (default none: every target rescales its output)."""
    import peft

    record = spec.record
    if not record.through_peft:
        return _engine_method_config(spec, targets)
    settings = json.loads(spec.settings) if spec.settings else {}
    arguments = record.peft_arguments(spec.rank, spec.alpha, settings)
    if record.allocates_rank:
        arguments.setdefault("init_r", math.ceil(1.5 * spec.rank))
        arguments["total_step"] = total_steps(spec, n_train)
    if "feedforward_modules" in record.settings:
        arguments.setdefault("feedforward_modules", [])
    return getattr(peft, record.peft_config)(target_modules=list(targets), **arguments)


def _engine_method_config(spec: RunSpec, targets: list[str]):
    """PEFT's ``LoraConfig`` of a LoRA or DoRA run of the engine (the tests train it through
    PEFT too, to hold the engine's fast paths to PEFT)."""
    import peft

    if spec.init is not None and registry.init(spec.init).replaces_base:
        raise ValueError(f"{spec.run_id}: PiSSA through PEFT is not cross-checked here")
    lora_alpha, use_rslora = peft_format.peft_scaling(spec.scaling, spec.alpha, spec.rank)
    return peft.LoraConfig(
        r=spec.rank,
        lora_alpha=lora_alpha,
        use_rslora=use_rslora,
        use_dora=spec.record.peft_use_dora,
        bias=spec.bias,
        target_modules=list(targets),
    )


def wrap(spec: RunSpec, dataset: Dataset, device: torch.device) -> nn.Module:
    """The run's PEFT model, its adapters drawn from the run's ``init`` seed."""
    import peft

    base = base_model(dataset, device)
    config = peft_config(spec, target_modules(spec, dataset), dataset["X_train"].shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(spec.seed, "init", spec.dataset, spec.rank))
        return peft.get_peft_model(base, config)


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """AdaLoRA's regulariser R = mean over its factors of ‖PPᵀ − I‖_F (P = A) and ‖QᵀQ − I‖_F
    (Q = B) (Zhang et al. 2023, arXiv 2303.10512, eq. 4), which PEFT adds only to a model output
    that carries ``.loss``."""
    terms = []
    for name, param in model.named_parameters():
        if not param.requires_grad or not ("lora_A" in name or "lora_B" in name):
            continue
        gram = param @ param.T if "lora_A" in name else param.T @ param
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        terms.append(torch.linalg.matrix_norm(gram - eye))
    return torch.stack(terms).mean()


def training_loss(spec: RunSpec, model: nn.Module, data):
    """The loss the run records (the MSE, :func:`~lorasweep.training.loop.reference_loss`);
    for AdaLoRA its backward pass also adds ``orth_reg_weight`` × the orthogonality penalty."""
    loss = reference_loss(model, data)
    if not spec.record.allocates_rank:
        return loss
    weight = model.peft_config["default"].orth_reg_weight

    def penalised(split: str, index=None, backward: bool = False) -> float:
        value = loss(split, index, backward)
        if backward:
            (weight * orthogonality_penalty(model)).backward()
        return value

    return penalised


def rank_allocation(spec: RunSpec, model: nn.Module, n_train: int):
    """What runs after each step: AdaLoRA's ``update_and_allocate`` at the global step count
    (without it AdaLoRA silently trains as LoRA at ``init_r``); None for every other method."""
    if not spec.record.allocates_rank:
        return None
    steps = iter(range(1, total_steps(spec, n_train) + 1))
    return lambda: model.base_model.update_and_allocate(next(steps))


def optimizer_for(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    """Adam over the trainable parameters at the run's rate, or the method's PEFT optimizer
    (LoRA-FA: A frozen at its init, B's gradient projected, Zhang et al. 2023)."""
    if spec.record.peft_optimizer is not None:
        from peft import optimizers

        factory = getattr(optimizers, spec.record.peft_optimizer)
        return factory(model, r=spec.rank, lora_alpha=spec.alpha, lr=spec.lr)
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=spec.lr)


def merged_changes(model: nn.Module, targets: list[str], prefix) -> dict[str, torch.Tensor]:
    """W_final − W₀ of each adapted module from PEFT's own merge of a copy of the model
    (:data:`~lorasweep.models.adapters.DELTA_WEIGHT` under ``prefix(module)``), and the merged
    ``bias`` itself where the merge changes it (IA3 rescales the bias with the output)."""
    merged = copy.deepcopy(model).merge_and_unload()
    changes = {}
    for name in targets:
        before = model.get_submodule(f"base_model.model.{name}").get_base_layer()
        after = merged.get_submodule(name)
        delta = after.weight.detach().double() - before.weight.detach().double()
        changes[f"{prefix(name)}{DELTA_WEIGHT}"] = delta.float().cpu()
        if before.bias is not None and not torch.equal(after.bias, before.bias):
            changes[f"{prefix(name)}bias"] = after.bias.detach().cpu().clone()
    return changes


def saved_files(model: nn.Module) -> dict[str, bytes]:
    """The bytes of :data:`SAVED_FILES` as ``save_pretrained`` writes them."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return {name: (Path(folder) / name).read_bytes() for name in SAVED_FILES}


def train_peft_run(
    spec: RunSpec,
    dataset: Dataset,
    device: torch.device,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> RunResult:
    """Train one run through PEFT and return its :class:`RunResult`: epoch 0 before any step,
    then one epoch of steps at a time until the end or a divergence, the test split on the final
    weights. ``initial_state`` (PEFT's adapter state dict) replaces the drawn adapter, so a test
    can start PEFT from the engine's own init."""
    from peft import set_peft_model_state_dict

    model = wrap(spec, dataset, device)
    if initial_state is not None:
        set_peft_model_state_dict(model, dict(initial_state))
    data = {
        split: (dataset[f"X_{split}"].to(device), dataset[f"y_{split}"].to(device))
        for split in splits_of(dataset.tensors)
    }
    loss = training_loss(spec, model, data)
    optimizer = optimizer_for(spec, model)
    n_train = dataset["X_train"].shape[0]
    batch_size = min(spec.batch_size or n_train, n_train)
    shuffle = generator(spec.seed, "shuffle", spec.dataset)
    after_step = rank_allocation(spec, model, n_train)

    history = train_epochs(
        spec.epochs,
        model,
        loss,
        optimizer,
        {},
        (n_train, batch_size, shuffle),
        device,
        held_out_splits(dataset),
        after_step,
    )
    return _result(spec, model, optimizer, history, dataset, device, loss)


def _result(spec, model, optimizer, history, dataset, device, loss) -> RunResult:
    from peft import get_peft_model_state_dict

    deep = dataset.spec.kind in DEEP_KINDS
    targets = target_modules(spec, dataset)
    trainable, total = model.get_nb_trainable_parameters()
    tensors = {  # cloned: VeRA and RandLoRA share their projections between modules
        k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()
    }
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    delta = merged_changes(model, targets, lambda name: f"{name}." if deep else "")
    record = {
        "counts": ParameterCounts(trainable=trainable, frozen=total - trainable, adapter=trainable),
        "scaling": None,
        "adapted": tuple(targets) if deep else None,
        "base_weight": None,
    }
    result = run_result(
        spec,
        history,
        record,
        tensors,
        {},
        state_bytes(numels, stepped=bool(optimizer.state)),
        device,
        False,
        dataset,
        lambda: evaluate(model, loss, TEST),
        population_tensors=delta,
    )
    result.delta_weights = delta
    result.peft_files = saved_files(model)
    return result
