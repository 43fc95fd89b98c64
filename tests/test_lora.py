import math

import pytest
import torch
from torch import nn

from lorasweep.models.accounting import count_parameters, training_state_bytes
from lorasweep.models.lora import LoRALinear, apply_lora, scaling_factor


def make_base(d_in=64, d_out=10, seed=0) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    base = nn.utils.skip_init(nn.Linear, d_in, d_out)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=gen) / math.sqrt(d_in))
        base.bias.copy_(torch.randn(d_out, generator=gen))
    return base


def reference_output(base: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ base.weight.detach().T + base.bias.detach()


@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_zero_b_inits_leave_output_exactly_unchanged(init):
    base = make_base()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    expected = reference_output(base, x)
    layer = LoRALinear(base, rank=4, alpha=8, init=init, generator=torch.Generator().manual_seed(2))
    assert torch.count_nonzero(layer.lora_B) == 0
    assert torch.count_nonzero(layer.lora_A) > 0
    assert torch.equal(layer(x), expected)


def test_pissa_leaves_output_unchanged_and_moves_principal_part_into_adapter():
    base = make_base(32, 24)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    expected = reference_output(base, x)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, rank=4, alpha=16, scaling="standard", init="pissa")
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    top = torch.linalg.svdvals(w0.double())[:4]
    torch.testing.assert_close(
        torch.linalg.svdvals(layer.delta_weight().double())[:4], top, rtol=1e-5, atol=1e-6
    )


def test_randn_init_is_not_a_no_op():
    base = make_base()
    x = torch.randn(8, 64)
    layer = LoRALinear(base, rank=4, alpha=1, scaling="constant", init="randn")
    assert not torch.allclose(layer(x), reference_output(base, x))


def test_scaling_rules():
    assert scaling_factor("standard", 16, 4) == 4.0
    assert scaling_factor("rslora", 16, 4) == 8.0
    assert scaling_factor("rslora", 8, 64) == pytest.approx(1.0)
    assert scaling_factor("constant", 1.0, 4) == 1.0
    assert scaling_factor("constant", 3.0, 64) == 3.0
    layer = LoRALinear(make_base(), rank=8, alpha=16, scaling="rslora")
    assert layer.scaling == pytest.approx(16 / math.sqrt(8))
    with pytest.raises(ValueError, match="unknown scaling"):
        scaling_factor("linear", 1, 1)


def test_seed_demo_counts_306_of_946_and_296_without_bias():
    demo = LoRALinear(
        nn.Linear(64, 10), rank=4, alpha=1, scaling="constant", init="randn", bias="lora_only"
    )
    counts = count_parameters(demo)
    assert (counts.trainable, counts.total, counts.adapter) == (306, 946, 296)
    clean = LoRALinear(nn.Linear(64, 10), rank=4, bias="none")
    counts = count_parameters(clean)
    assert (counts.trainable, counts.frozen, counts.total) == (296, 650, 946)
    assert count_parameters(nn.Linear(64, 10)).trainable == 650


@pytest.mark.parametrize("bias", ["none", "lora_only"])
def test_gradients_reach_only_trainable_parameters(bias):
    layer = LoRALinear(make_base(), rank=4, init="randn", bias=bias)
    x = torch.randn(16, 64)
    layer(x).square().mean().backward()
    assert layer.base.weight.grad is None
    assert layer.lora_A.grad is not None and layer.lora_A.grad.abs().sum() > 0
    assert layer.lora_B.grad is not None and layer.lora_B.grad.abs().sum() > 0
    if bias == "lora_only":
        assert layer.base.bias.grad is not None
    else:
        assert layer.base.bias.grad is None


def test_merge_then_unmerge_round_trips():
    """Merging adds ΔW to the base weight and unmerging subtracts it again, exact up to the
    float32 rounding of one addition and one subtraction at the merged weight's magnitude."""
    gen = torch.Generator().manual_seed(1)
    layer = LoRALinear(make_base(), rank=4, alpha=8, init="randn", generator=gen)
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(32, 64, generator=gen)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight(), rtol=0, atol=0)
    rounding = 2 * torch.finfo(torch.float32).eps * layer.base.weight.abs().max().item()
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=rounding)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError):
        layer.unmerge()


def test_eval_does_not_merge_silently():
    layer = LoRALinear(make_base(), rank=4, init="randn")
    w0 = layer.base.weight.detach().clone()
    layer.eval()
    layer.train()
    layer.eval()
    assert not layer.merged
    assert torch.equal(layer.base.weight, w0)


def test_layout_is_paper_and_peft():
    layer = LoRALinear(nn.Linear(64, 10), rank=4)
    assert layer.lora_A.shape == (4, 64)
    assert layer.lora_B.shape == (10, 4)
    assert layer.delta_weight().shape == layer.base.weight.shape


def test_rank_outside_layer_is_rejected():
    with pytest.raises(ValueError, match="rank must be in 1..10"):
        LoRALinear(nn.Linear(64, 10), rank=11)


def test_apply_lora_wraps_matching_linears_and_freezes_the_rest():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    wrapped = apply_lora(model, r"2", rank=2)
    assert wrapped == ["2"]
    assert isinstance(model[2], LoRALinear) and isinstance(model[0], nn.Linear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"2.lora_A", "2.lora_B"}
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), r"attn\..*", rank=1)


def test_dropout_uses_its_own_generator_not_the_global_rng():
    state = torch.random.get_rng_state()
    outs = []
    for _ in range(2):
        layer = LoRALinear(
            make_base(),
            rank=4,
            init="randn",
            dropout=0.5,
            generator=torch.Generator().manual_seed(0),
            dropout_generator=torch.Generator().manual_seed(1),
        )
        outs.append(layer(torch.ones(4, 64)))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_training_state_bytes_counts_params_grads_and_adam_moments():
    layer = LoRALinear(nn.Linear(64, 10), rank=4)
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad])
    assert training_state_bytes(layer) == 4 * 296 * 4
    layer(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    measured = training_state_bytes(layer, optimizer)
    assert 4 * 296 * 4 <= measured <= 4 * 296 * 4 + 2 * 8
