"""Results held against theory: Eckart–Young optima, the noise floor, subspace similarity."""

import math

import pytest
import torch

from lorasweep.analysis.geometry import amplification_factor, similarity_grid, subspace_similarity
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import synthetic
from lorasweep.training.loop import train_run

TASK_RANK = 4


@pytest.fixture(scope="module")
def task():
    spec = synthetic.DatasetSpec(
        name="science", kind="lowrank", in_features=32, out_features=32, n_train=8192,
        n_val=4096, noise_std=0.1, task_rank=TASK_RANK, task_scale=3.0, spectrum_decay=0.6,
        seed=11,
    )  # fmt: skip
    data = synthetic.generate(spec)
    return data, synthetic.ground_truth(data)


def run(data, **overrides):
    base = dict(dataset="science", method="lora", seed=0, lr=0.01, epochs=60, batch_size=512,
                bias="none", device="cpu", rank=TASK_RANK, alpha=16.0, scaling="rslora",
                init="kaiming")  # fmt: skip
    return train_run(RunSpec(**{**base, **overrides}), data)


@pytest.mark.parametrize("rank", [TASK_RANK, 2 * TASK_RANK])
def test_lora_at_or_above_task_rank_reaches_the_noise_floor(task, rank):
    data, truth = task
    result = run(data, rank=rank)
    assert result.final["val_loss"] == pytest.approx(truth.noise_floor, rel=0.10)


@pytest.mark.parametrize("rank", [1, 2])
def test_lora_below_task_rank_reaches_the_eckart_young_optimum(task, rank):
    data, truth = task
    optimum = truth.optimal_loss(rank, bias_trains=False)
    assert optimum > 1.5 * truth.noise_floor
    result = run(data, rank=rank)
    assert result.final["val_loss"] == pytest.approx(optimum, rel=0.10)


def test_full_finetuning_reaches_the_noise_floor(task):
    data, truth = task
    spec = RunSpec(dataset="science", method="full", seed=0, lr=0.01, epochs=60, batch_size=512,
                   bias="none", device="cpu")  # fmt: skip
    assert train_run(spec, data).final["val_loss"] == pytest.approx(truth.noise_floor, rel=0.10)


def test_phi_is_one_for_identical_subspaces_and_about_r_over_d_for_random_ones():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 256, generator=gen, dtype=torch.float64)
    grid = similarity_grid(a, a)
    assert torch.allclose(torch.diagonal(grid), torch.ones(8, dtype=torch.float64))
    rotated = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))[0] @ a
    assert similarity_grid(rotated, a)[-1, -1].item() == pytest.approx(1.0)
    d, r = 256, 8
    phis = []
    for _ in range(50):
        u1 = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))[0]
        u2 = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))[0]
        phis.append(subspace_similarity(u1, u2, r, r))
    assert sum(phis) / len(phis) == pytest.approx(r / d, rel=0.15)


def test_amplification_factor_matches_its_definition():
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(20, 30, generator=gen, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(20, 2, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(30, 2, generator=gen, dtype=torch.float64))[0]
    delta = u @ torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64)) @ v.T
    expected = math.sqrt(29.0) / torch.linalg.matrix_norm(u.T @ w0 @ v).item()
    assert amplification_factor(delta, w0, 2) == pytest.approx(expected, rel=1e-9)


def test_pissa_leaves_the_initial_loss_unchanged(task):
    data, _ = task
    plain = run(data, init="kaiming", epochs=1)
    pissa = run(data, init="pissa", epochs=1)
    assert pissa.epochs[0]["val_loss"] == pytest.approx(plain.epochs[0]["val_loss"], rel=1e-5)
    randn = run(data, init="randn", scaling="constant", alpha=1.0, epochs=1)
    assert randn.epochs[0]["val_loss"] > 10 * plain.epochs[0]["val_loss"]


DEEP_TASK_RANK = 2


@pytest.fixture(scope="module")
def mlp_shifted_transformer():
    """A small transformer whose teacher shifts only its MLP (up, down), trained one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = synthetic.DatasetSpec.from_config(
        dict(name="deep", kind="transformer", d_model=16, n_heads=2, n_layers=1, seq_len=4,
             d_ff=32, shifted="mlp", task_rank=DEEP_TASK_RANK, task_scale=2.0, noise_std=0.1,
             n_train=2048, n_val=1024, seed=5)
    )  # fmt: skip
    yield synthetic.generate(spec)
    torch.set_num_threads(threads)


def deep_run(data, method="lora", **overrides):
    base = dict(dataset="deep", method=method, seed=0, lr=0.01, epochs=40, batch_size=256,
                bias="none", device="cpu")  # fmt: skip
    if method == "lora":
        base |= dict(rank=DEEP_TASK_RANK, alpha=8.0, scaling="standard", init="kaiming")
    return train_run(RunSpec(**{**base, **overrides}), data)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("targets", "rank"),
    [("mlp", DEEP_TASK_RANK), ("mlp", 2 * DEEP_TASK_RANK), ("all", DEEP_TASK_RANK)],
)
def test_lora_on_every_shifted_module_reaches_the_noise_floor(
    mlp_shifted_transformer, targets, rank
):
    result = deep_run(mlp_shifted_transformer, targets=targets, rank=rank)
    assert result.final["val_loss"] == pytest.approx(0.01, rel=0.15)


@pytest.mark.slow
def test_full_finetuning_of_the_network_reaches_the_noise_floor(mlp_shifted_transformer):
    result = deep_run(mlp_shifted_transformer, method="full")
    assert result.final["val_loss"] == pytest.approx(0.01, rel=0.15)


@pytest.mark.slow
def test_attention_only_lora_cannot_undo_a_shift_in_the_mlp(mlp_shifted_transformer):
    result = deep_run(mlp_shifted_transformer, targets="attention", rank=4 * DEEP_TASK_RANK)
    assert result.final["val_loss"] >= 1.25 * 0.01
