"""Deep teacher–student tasks with a known shift (kinds ``mlp`` and ``transformer``).

The base ("pretrained") network f₀ is drawn from the dataset seed, module by module: every
linear weight N(0, 1/d_in), every linear bias N(0, 0.1²), every LayerNorm at the identity
(weight 1, bias 0). The teacher f* is f₀ with a shift ΔW* = U diag(s) Vᵀ of rank ``task_rank``
(s_i = ``task_scale`` · ``spectrum_decay``^(i−1), U and V orthonormal, drawn for each module)
added to the weight of every linear module that ``shifted`` selects. Inputs are x ~ N(0, I)
(``seq_len`` tokens of width ``d_model`` for the transformer) and targets y = f*(x) + σε, so σ²
is the exact floor of the validation MSE, reached by any student that equals f*: full
fine-tuning, and LoRA of rank ≥ ``task_rank`` on every shifted module.

Stored tensors: f₀'s state dict under its own keys (``blocks.0.attn.q.weight``, …), each true
shift as ``<module>.delta_weight``, and the splits ``X_train``, ``y_train``, ``X_val``,
``y_val``, ``X_test``, ``y_test``, each from its own seeded stream. Every tensor is stored in
float32, and y is computed in float64 from exactly the stored x, f₀ and ΔW*.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from lorasweep.models.names import linear_modules, select
from lorasweep.models.networks import build_network
from lorasweep.tasks.synthetic import Dataset, DatasetSpec, noise_floor, orthonormal, stream

SHIFT_SUFFIX = ".delta_weight"


@dataclass(frozen=True)
class DeepGroundTruth:
    """What fine-tuning f₀ has to learn: a rank-``task_rank`` shift in each shifted module."""

    task_rank: int
    singular_values: dict[str, tuple[float, ...]]
    """The top ``task_rank`` singular values of ΔW*, by shifted module, in forward order."""
    noise_floor: float

    @classmethod
    def from_json(cls, truth: dict) -> DeepGroundTruth:
        values = {name: tuple(s) for name, s in truth["singular_values"].items()}
        return cls(truth["task_rank"], values, truth["noise_floor"])

    def optimal_loss(
        self, rank: int | None, bias_trains: bool, adapted: Collection[str] = ()
    ) -> float | None:
        """σ² where the run can equal the teacher: full fine-tuning (``rank`` None), or LoRA of
        rank ≥ ``task_rank`` whose ``adapted`` modules include every shifted one. None
        otherwise: a network has no closed-form best rank-r update. (The bias never needs to
        move: f* has f₀'s biases.)"""
        if rank is None:
            return self.noise_floor
        if rank >= self.task_rank and set(self.singular_values) <= set(adapted):
            return self.noise_floor
        return None


def shifted_modules(spec: DatasetSpec) -> list[str]:
    """The names of the modules whose weight the teacher shifts."""
    return [m.name for m in select(linear_modules(spec.as_dict()), spec.shifted)]


def _draw_base(spec: DatasetSpec, network: nn.Module) -> dict[str, torch.Tensor]:
    """f₀'s state dict in float64, each module from its own seeded stream (so adding a layer
    leaves the others unchanged)."""
    state = {}
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            gen = stream(spec, "base", name)
            d_out, d_in = module.weight.shape
            weight = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
            state[f"{name}.weight"] = weight / math.sqrt(d_in)
            state[f"{name}.bias"] = 0.1 * torch.randn(d_out, generator=gen, dtype=torch.float64)
        elif isinstance(module, nn.LayerNorm):
            state[f"{name}.weight"] = torch.ones(module.normalized_shape, dtype=torch.float64)
            state[f"{name}.bias"] = torch.zeros(module.normalized_shape, dtype=torch.float64)
    missing = set(network.state_dict()) - set(state)
    if missing:
        raise AssertionError(f"no draw for {sorted(missing)}")
    return state


def _draw_shift(spec: DatasetSpec, name: str, d_out: int, d_in: int) -> torch.Tensor:
    """ΔW* = U diag(s) Vᵀ of one module, from the module's own seeded stream."""
    gen = stream(spec, "task", name)
    u = orthonormal(d_out, spec.task_rank, gen)
    v = orthonormal(d_in, spec.task_rank, gen)
    s = torch.tensor(spec.task_singular_values(), dtype=torch.float64)
    return (u * s[None, :]) @ v.T


def _input_shape(spec: DatasetSpec, n: int) -> tuple[int, ...]:
    if spec.kind == "transformer":
        return (n, spec.seq_len, spec.d_model)
    return (n, spec.in_features)


def generate(spec: DatasetSpec) -> Dataset:
    """Draw f₀, the shifts and the samples (see the module docstring)."""
    network = build_network(spec, dtype=torch.float64)
    base = {k: v.float() for k, v in _draw_base(spec, network).items()}
    shifts = {}
    for name in shifted_modules(spec):
        d_out, d_in = base[f"{name}.weight"].shape
        shifts[name] = _draw_shift(spec, name, d_out, d_in).float()
    teacher = {k: v.double() for k, v in base.items()}
    for name, delta in shifts.items():
        teacher[f"{name}.weight"] = teacher[f"{name}.weight"] + delta.double()
    network.load_state_dict(teacher)

    tensors = {**base, **{f"{name}{SHIFT_SUFFIX}": d for name, d in shifts.items()}}
    for split, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        gen = stream(spec, split)
        x = torch.randn(_input_shape(spec, n), generator=gen, dtype=torch.float64).float()
        with torch.no_grad():
            clean = network(x.double())
        eps = torch.randn(clean.shape, generator=gen, dtype=torch.float64)
        tensors[f"X_{split}"] = x
        tensors[f"y_{split}"] = (clean + spec.noise_std * eps).float()
    return Dataset(spec, tensors)


def ground_truth(dataset: Dataset) -> DeepGroundTruth:
    """The :class:`DeepGroundTruth` of a deep dataset, from its stored shifts (float64 SVD)."""
    spec = dataset.spec
    values = {}
    for name in shifted_modules(spec):
        svals = torch.linalg.svdvals(dataset[f"{name}{SHIFT_SUFFIX}"].double())
        values[name] = tuple(float(s) for s in svals[: spec.task_rank])
    return DeepGroundTruth(spec.task_rank, values, noise_floor(spec))
