"""Seeded synthetic regression tasks with a known ground truth.

``lowrank``: a "pretrained" base (W₀, b₀) and a task shift ΔW* = U diag(s) Vᵀ of rank k, with
inputs x ~ N(0, I) and targets y = (W₀ + ΔW*)x + b₀ + σε. Fine-tuning W₀ should recover ΔW*.

``noise``: the seed demo's task. x and y are independent N(0, I) and N(0, σ²I); nothing can be
learned, and the best possible MSE is σ².

``mlp`` and ``transformer``: a deep teacher–student task, drawn in :mod:`lorasweep.tasks.deep`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from lorasweep.options import DEEP_KINDS, KINDS
from lorasweep.seeding import generator


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset entry of the config (see config/README.md for each key)."""

    name: str
    kind: str
    in_features: int
    out_features: int
    n_train: int
    n_val: int
    noise_std: float
    task_rank: int = 0
    task_scale: float = 1.0
    spectrum_decay: float = 1.0
    seed: int = 0
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    seq_len: int | None = None
    d_ff: int | None = None
    shifted: str | None = None
    """The deep kinds' architecture and shifted modules; None for the single-layer kinds."""

    @classmethod
    def from_config(cls, entry: dict) -> DatasetSpec:
        """The spec of a config entry. The deep kinds shift ``all`` modules unless told
        otherwise, and the transformer's input and output width is ``d_model``."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in entry.items() if k in known}
        if values["kind"] in DEEP_KINDS:
            values.setdefault("shifted", "all")
        if values["kind"] == "transformer":
            values["in_features"] = values["out_features"] = values["d_model"]
        return cls(**values)

    def as_dict(self) -> dict:
        """The spec as stored in the dataset's sidecar, without the keys its kind does not use."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def task_singular_values(self) -> list[float]:
        """s_i = task_scale · spectrum_decay^(i−1), i = 1…task_rank (empty for ``noise``)."""
        if self.kind == "noise":
            return []
        return [self.task_scale * self.spectrum_decay**i for i in range(self.task_rank)]


@dataclass
class Dataset:
    spec: DatasetSpec
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]


def noise_floor(spec: DatasetSpec) -> float:
    """σ², the expected per-element MSE of the true model on fresh data."""
    return spec.noise_std**2


@dataclass(frozen=True)
class GroundTruth:
    """What fine-tuning from (W₀, b₀) has to learn: the map W* − W₀ and the bias gap b* − b₀.

    For ``lowrank`` W* − W₀ = ΔW* and b* = b₀. For ``noise`` the true map is zero, so the update
    has to cancel W₀ (and b₀, if the bias trains).
    """

    singular_values: tuple[float, ...]
    bias_gap_sq: float
    out_features: int
    noise_floor: float

    def optimal_loss(self, rank: int | None, bias_trains: bool) -> float:
        """Best expected per-element MSE of W₀ + (rank-r update), x ~ N(0, I).

        Eckart–Young–Mirsky: (1/d_out)·(Σ_{i>r} s_i² + ‖b* − b₀‖²·[bias frozen]) + σ², where s_i are
        the singular values of W* − W₀. ``rank=None`` is an unrestricted update (full FT).
        """
        tail = self.singular_values[rank:] if rank is not None else ()
        bias_term = 0.0 if bias_trains else self.bias_gap_sq
        return (sum(s * s for s in tail) + bias_term) / self.out_features + self.noise_floor


def orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def generate(spec: DatasetSpec) -> Dataset:
    """Draw the dataset. Each part has its own seeded stream, so e.g. changing ``n_train``
    leaves W₀ and ΔW* unchanged."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown dataset kind {spec.kind!r}; allowed: {', '.join(KINDS)}")
    if spec.kind in DEEP_KINDS:
        from lorasweep.tasks import deep

        return deep.generate(spec)
    d_in, d_out = spec.in_features, spec.out_features
    base_gen = generator(spec.seed, spec.name, "base")
    if spec.kind == "noise":
        bound = 1.0 / math.sqrt(d_in)
        w0 = (torch.rand(d_out, d_in, generator=base_gen, dtype=torch.float64) * 2 - 1) * bound
        b0 = (torch.rand(d_out, generator=base_gen, dtype=torch.float64) * 2 - 1) * bound
        delta = torch.zeros(d_out, d_in, dtype=torch.float64)
    else:
        w0 = torch.randn(d_out, d_in, generator=base_gen, dtype=torch.float64) / math.sqrt(d_in)
        b0 = 0.1 * torch.randn(d_out, generator=base_gen, dtype=torch.float64)
        task_gen = generator(spec.seed, spec.name, "task")
        u = orthonormal(d_out, spec.task_rank, task_gen)
        v = orthonormal(d_in, spec.task_rank, task_gen)
        s = torch.tensor(spec.task_singular_values(), dtype=torch.float64)
        delta = (u * s[None, :]) @ v.T

    tensors = {"W0": w0, "b0": b0, "delta_W": delta}
    for split, n in (("train", spec.n_train), ("val", spec.n_val)):
        split_gen = generator(spec.seed, spec.name, split)
        x = torch.randn(n, d_in, generator=split_gen, dtype=torch.float64)
        eps = torch.randn(n, d_out, generator=split_gen, dtype=torch.float64)
        if spec.kind == "noise":
            y = spec.noise_std * eps
        else:
            y = x @ (w0 + delta).T + b0 + spec.noise_std * eps
        tensors[f"X_{split}"] = x
        tensors[f"y_{split}"] = y
    return Dataset(spec, {k: v.to(torch.float32) for k, v in tensors.items()})


def ground_truth(dataset: Dataset):
    """Compute the :class:`GroundTruth` of a dataset from its stored tensors (float64 SVD); for
    the deep kinds, :func:`lorasweep.tasks.deep.ground_truth`."""
    spec = dataset.spec
    if spec.kind in DEEP_KINDS:
        from lorasweep.tasks import deep

        return deep.ground_truth(dataset)
    w0, b0 = dataset["W0"].double(), dataset["b0"].double()
    if spec.kind == "noise":
        gap_w, gap_b = -w0, -b0
    else:
        gap_w, gap_b = dataset["delta_W"].double(), torch.zeros_like(b0)
    svals = torch.linalg.svdvals(gap_w)
    return GroundTruth(
        singular_values=tuple(float(s) for s in svals),
        bias_gap_sq=float(gap_b.square().sum()),
        out_features=spec.out_features,
        noise_floor=noise_floor(spec),
    )
