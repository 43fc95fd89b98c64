"""The newer papers' measures on hand-made cases with a known answer."""

import math

import pytest
import torch

from lorasweep.analysis.intruders import intruder_counts
from lorasweep.analysis.learning_rate import optimal_learning_rate

GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


@pytest.mark.parametrize("true_lr", [2e-4, 1e-3, 4.2e-3, 1.5e-2])
def test_optimum_of_a_u_curve_is_recovered_between_grid_points(true_lr):
    losses = [0.01 * 10 ** (0.7 * (math.log10(lr) - math.log10(true_lr)) ** 2) for lr in GRID]
    lr, at_edge = optimal_learning_rate(GRID, losses)
    assert lr == pytest.approx(true_lr, rel=1e-9)
    assert not at_edge


def test_optimum_at_the_grid_edge_is_flagged():
    losses = [1.0, 0.5, 0.3, 0.2, 0.15, 0.1]
    assert optimal_learning_rate(GRID, losses) == (GRID[-1], True)
    assert optimal_learning_rate(GRID, losses[::-1]) == (GRID[0], True)


def test_diverged_points_count_as_infinite_loss():
    losses = [0.5, 0.2, 0.1, 0.3, math.nan, math.inf]
    lr, at_edge = optimal_learning_rate(GRID, losses)
    assert 3e-4 < lr < 3e-3 and not at_edge


def _diagonal_base(d):
    return torch.diag(torch.linspace(2.0, 1.0, d, dtype=torch.float64))


def test_no_intruders_in_the_base_itself_or_a_small_in_subspace_update():
    w0 = torch.randn(24, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert set(intruder_counts(w0, w0).values()) == {0}
    u, s, vh = torch.linalg.svd(w0, full_matrices=False)
    nudged = w0 + 0.05 * s[0] * torch.outer(u[:, 0], vh[0])
    assert set(intruder_counts(w0, nudged).values()) == {0}


def test_a_large_update_orthogonal_to_every_base_direction_gives_k_intruders():
    d, k = 16, 3
    w0 = _diagonal_base(d)
    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    while hadamard.shape[0] < d:
        hadamard = torch.cat(
            [torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)]
        )
    spread = hadamard / math.sqrt(d)
    update = sum(100.0 * (k - j) * torch.outer(spread[:, j], spread[:, j + 5]) for j in range(k))
    counts = intruder_counts(w0, w0 + update, top_k=k)
    assert set(counts.values()) == {k}


def test_intruder_counts_match_peft_on_the_same_weights():
    """PEFT's reduce_intruder_dimension logs how many intruders each LoRA layer has."""
    peft = pytest.importorskip("peft")
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    gen = torch.Generator().manual_seed(3)
    base = torch.nn.Sequential()
    base.add_module("layer", torch.nn.Linear(32, 32, bias=False))
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=4, target_modules=["layer"], init_lora_weights=False)
    )
    layer = model.base_model.model.layer
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.randn(32, 32, generator=gen))
        layer.lora_A["default"].weight.copy_(3 * torch.randn(4, 32, generator=gen))
        layer.lora_B["default"].weight.copy_(3 * torch.randn(32, 4, generator=gen))
    w0 = layer.base_layer.weight.detach().double()
    fine_tuned = w0 + layer.get_delta_weight("default").detach().double()
    messages = []
    reduce_intruder_dimension(model, logging_sink=messages.append)
    logged = 0 if "No intruders" in messages[0] else int(messages[0].rsplit(" ", 1)[1])
    ours = intruder_counts(w0, fine_tuned, top_k=10, epsilons=[0.5])[0.5]
    assert ours == logged
