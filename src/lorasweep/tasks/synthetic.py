"""Seeded synthetic regression tasks with a known ground truth.

``lowrank``: a "pretrained" base (W₀, b₀) and a task shift ΔW* = U diag(s) Vᵀ of rank k, with
inputs x ~ N(0, I) and targets y = (W₀ + ΔW*)x + b₀ + σε. Fine-tuning W₀ should recover ΔW*.

``noise``: the seed demo's task. x and y are independent N(0, I) and N(0, σ²I); nothing can be
learned, and the best possible MSE is σ².

A ``lowrank`` dataset may declare a *source* task, the one the base was "pretrained" for, to
measure forgetting (:class:`SourceSpec`). With V_k the top-k right-singular vectors of W₀ and
P = V_kV_kᵀ, source inputs are x_src ~ N(0, Σ_src) with Σ_src = P + leak·(I − P) and targets
y_src = W₀x_src + b₀ + σε, so the base is optimal there. The target task's inputs then excite
the other directions, Σ_tgt = (I − P) + leak·P, and ΔW*'s input directions are drawn
orthogonal to V_k: learning ΔW* never requires moving W₀ where the source lives, and the
Eckart–Young optimum is unchanged (ΔW*·Σ_tgt^½ = ΔW*).

``mlp`` and ``transformer``: a deep teacher–student task, drawn in :mod:`lorasweep.tasks.deep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lorasweep.options import COMPATS, DEEP_KINDS, KINDS
from lorasweep.seeding import generator
from lorasweep.tasks import tutorial
from lorasweep.tasks.spec import DatasetSpec, SourceSpec


@dataclass
class Dataset:
    spec: DatasetSpec
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]


def stream(spec: DatasetSpec, *purpose: object) -> torch.Generator:
    """The dataset's seeded stream for ``purpose`` (``base``, ``task``, a split's name, …): one
    per data seed, name and purpose, and per task seed where it is not 0, so that task seed 0
    draws exactly what the dataset always drew."""
    replicate = ("task_seed", spec.task_seed) if spec.task_seed else ()
    return generator(spec.seed, spec.name, *replicate, *purpose)


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


def orthonormal(
    rows: int, cols: int, gen: torch.Generator, avoid: torch.Tensor | None = None
) -> torch.Tensor:
    """``cols`` random orthonormal columns; orthogonal to the columns of ``avoid`` if given."""
    draw = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    if avoid is not None:
        draw = draw - avoid @ (avoid.T @ draw)
    q, r = torch.linalg.qr(draw)
    return q * torch.sign(torch.diagonal(r))[None, :]


SOURCE_DIRECTIONS = "source_directions"
"""The stored V_k of a dataset with a source task: the target inputs' covariance is
(I − P) + leak·P with P = V_kV_kᵀ (:func:`lorasweep.tasks.population.input_covariance`)."""


def source_directions(w0: torch.Tensor, source: SourceSpec) -> torch.Tensor:
    """V_k: the top ``source.top_directions`` right-singular vectors of W₀ (d_in×k, float64)."""
    _, _, vh = torch.linalg.svd(w0.double(), full_matrices=False)
    return vh[: source.top_directions].T


def _excite(x: torch.Tensor, directions: torch.Tensor, on: float, off: float) -> torch.Tensor:
    """x·S for x ~ N(0, I), with S = √on·P + √off·(I − P) and P the projector onto
    ``directions``: the rows then have covariance on·P + off·(I − P)."""
    along = (x @ directions) @ directions.T
    return math.sqrt(on) * along + math.sqrt(off) * (x - along)


def _base_and_shift(spec: DatasetSpec) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """W₀, b₀ and ΔW* (float64) from the dataset's ``base`` and ``task`` streams, and V_k of a
    source task (None without one); ΔW*'s input directions are drawn orthogonal to V_k."""
    d_in, d_out = spec.in_features, spec.out_features
    base_gen = stream(spec, "base")
    directions = None
    if spec.kind == "noise":
        bound = 1.0 / math.sqrt(d_in)
        w0 = (torch.rand(d_out, d_in, generator=base_gen, dtype=torch.float64) * 2 - 1) * bound
        b0 = (torch.rand(d_out, generator=base_gen, dtype=torch.float64) * 2 - 1) * bound
        delta = torch.zeros(d_out, d_in, dtype=torch.float64)
    else:
        w0 = torch.randn(d_out, d_in, generator=base_gen, dtype=torch.float64) / math.sqrt(d_in)
        b0 = 0.1 * torch.randn(d_out, generator=base_gen, dtype=torch.float64)
        if spec.source is not None:
            directions = source_directions(w0, spec.source)
        task_gen = stream(spec, "task")
        u = orthonormal(d_out, spec.task_rank, task_gen)
        v = orthonormal(d_in, spec.task_rank, task_gen, avoid=directions)
        s = torch.tensor(spec.task_singular_values(), dtype=torch.float64)
        delta = (u * s[None, :]) @ v.T
    return {"W0": w0, "b0": b0, "delta_W": delta}, directions


def generate(spec: DatasetSpec) -> Dataset:
    """Draw the dataset. Each part has its own seeded stream, so e.g. changing ``n_train``
    leaves W₀ and ΔW* unchanged, and the test split (stream ``test``) leaves the training and
    validation splits as they were before it existed; with ``compat: tutorial`` the training
    split and the base come from the tutorial's single stream instead
    (:mod:`lorasweep.tasks.tutorial`)."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown dataset kind {spec.kind!r}; allowed: {', '.join(KINDS)}")
    if spec.compat not in COMPATS:
        raise ValueError(f"unknown compat {spec.compat!r}; allowed: {', '.join(COMPATS)}")
    if spec.kind in DEEP_KINDS:
        from lorasweep.tasks import deep

        return deep.generate(spec)
    d_in, d_out = spec.in_features, spec.out_features
    splits = {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}
    directions = None
    if tutorial.is_tutorial(spec):
        tensors = tutorial.training_split_and_base(spec)
        tensors["delta_W"] = torch.zeros(d_out, d_in)
        del splits["train"]
    else:
        tensors, directions = _base_and_shift(spec)
    for split, n in splits.items():
        split_gen = stream(spec, split)
        x = torch.randn(n, d_in, generator=split_gen, dtype=torch.float64)
        eps = torch.randn(n, d_out, generator=split_gen, dtype=torch.float64)
        if directions is not None:
            x = _excite(x, directions, on=spec.source.leak, off=1.0)
        if spec.kind == "noise":
            y = spec.noise_std * eps
        else:
            y = x @ (tensors["W0"] + tensors["delta_W"]).T + tensors["b0"] + spec.noise_std * eps
        tensors[f"X_{split}"] = x
        tensors[f"y_{split}"] = y
    if directions is not None:
        tensors |= _source_split(spec, tensors["W0"], tensors["b0"], directions)
        tensors[SOURCE_DIRECTIONS] = directions
    return Dataset(spec, {k: v.to(torch.float32) for k, v in tensors.items()})


def _source_split(
    spec: DatasetSpec, w0: torch.Tensor, b0: torch.Tensor, directions: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``X_source``, ``y_source``: x_src ~ N(0, P + leak·(I − P)), y_src = W₀x_src + b₀ + σε,
    from the dataset's own ``source`` stream."""
    gen = stream(spec, "source")
    n = spec.source.n
    x = torch.randn(n, spec.in_features, generator=gen, dtype=torch.float64)
    eps = torch.randn(n, spec.out_features, generator=gen, dtype=torch.float64)
    x = _excite(x, directions, on=1.0, off=spec.source.leak)
    return {"X_source": x, "y_source": x @ w0.T + b0 + spec.noise_std * eps}


def ground_truth(dataset: Dataset):
    """Compute the :class:`GroundTruth` of a dataset from its stored tensors (float64 SVD); for
    the deep kinds, :func:`lorasweep.tasks.deep.ground_truth`.

    Singular values at or below the numerical-rank tolerance of the stored float32 matrix,
    s_max · max(d_in, d_out) · eps(float32) (as ``numpy.linalg.matrix_rank``), are rounding
    noise of the storage, not part of the task, and are set to 0: ΔW* of rank k then has
    exactly k non-zero singular values, and with σ = 0 the optimum at r ≥ k is exactly 0.
    """
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
    if svals.numel():
        tolerance = svals.max() * max(gap_w.shape) * torch.finfo(torch.float32).eps
        svals = torch.where(svals > tolerance, svals, torch.zeros_like(svals))
    return GroundTruth(
        singular_values=tuple(float(s) for s in svals),
        bias_gap_sq=float(gap_b.square().sum()),
        out_features=spec.out_features,
        noise_floor=noise_floor(spec),
    )
