"""The test split (its own seeded stream, evaluated once on the final weights) and the exact
population risk of a single-layer ``lowrank`` run."""

import math

import pytest
import torch

from lorasweep.planning.runs import RunSpec
from lorasweep.seeding import generator
from lorasweep.tasks import population, synthetic
from lorasweep.tasks.synthetic import SOURCE_DIRECTIONS, SourceSpec
from lorasweep.training.batched import train_cohort
from lorasweep.training.loop import train_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOWRANK = dict(name="t", kind="lowrank", in_features=20, out_features=12, n_train=300, n_val=60,
               noise_std=0.2, task_rank=3, task_scale=2.0, spectrum_decay=0.5, seed=3)  # fmt: skip
KINDS = {
    "lowrank": LOWRANK,
    "source": {**LOWRANK, "source": SourceSpec(n=50, top_directions=4, leak=0.1)},
    "noise": {**LOWRANK, "kind": "noise", "task_rank": 0},
    "tutorial": {**LOWRANK, "kind": "noise", "task_rank": 0, "compat": "tutorial"},
    "mlp": dict(name="m", kind="mlp", in_features=6, out_features=5, d_model=8, n_layers=2,
                task_rank=1, noise_std=0.1, n_train=40, n_val=10, seed=1, shifted="all"),
    "transformer": dict(name="f", kind="transformer", in_features=8, out_features=8, d_model=8,
                        n_layers=1, n_heads=2, seq_len=3, d_ff=16, task_rank=1, noise_std=0.1,
                        n_train=24, n_val=8, shifted="all"),
}  # fmt: skip


def generate(entry: dict, **overrides) -> synthetic.Dataset:
    return synthetic.generate(synthetic.DatasetSpec(**{**entry, **overrides}))


@pytest.mark.parametrize("kind", KINDS)
def test_the_test_split_changes_no_other_tensor(kind):
    small, large = generate(KINDS[kind], n_test=5), generate(KINDS[kind], n_test=70)
    others = set(small.tensors) - {"X_test", "y_test"}
    assert others == set(large.tensors) - {"X_test", "y_test"}
    assert all(torch.equal(small[k], large[k]) for k in others)
    assert small["X_test"].shape[0] == 5 and large["y_test"].shape[0] == 70


def test_the_splits_are_drawn_as_before_the_test_split_existed():
    """Train and val come from their own streams alone, exactly as they were drawn before."""
    data = generate(LOWRANK)
    for split, n in (("train", 300), ("val", 60)):
        gen = generator(3, "t", split)
        x = torch.randn(n, 20, generator=gen, dtype=torch.float64)
        eps = torch.randn(n, 12, generator=gen, dtype=torch.float64)
        w = (data["W0"].double(), data["delta_W"].double())
        assert torch.equal(data[f"X_{split}"], x.float())
        y = x @ (w[0] + w[1]).T + data["b0"].double() + 0.2 * eps
        torch.testing.assert_close(data[f"y_{split}"], y.float(), rtol=1e-6, atol=1e-6)


def test_n_test_defaults_to_n_val_and_has_a_stream_of_its_own():
    spec = synthetic.DatasetSpec.from_config({k: v for k, v in LOWRANK.items()})
    assert spec.n_test == 60 and spec.as_dict()["n_test"] == 60
    data = synthetic.generate(spec)
    assert data["X_test"].shape == data["X_val"].shape
    assert not torch.equal(data["X_test"], data["X_val"])


def test_the_true_weights_have_population_risk_sigma_squared():
    for kind in ("lowrank", "source"):
        data = generate(KINDS[kind])
        assert population.update_risk(data, data["delta_W"], None) == pytest.approx(0.04)


def perturbed(data: synthetic.Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    update = data["delta_W"].double() + 0.3 * torch.randn(
        12, 20, generator=gen, dtype=torch.float64
    )
    bias = data["b0"].double() + 0.2 * torch.randn(12, generator=gen, dtype=torch.float64)
    return update, bias


@pytest.mark.parametrize("kind", ["lowrank", "source"])
def test_population_risk_equals_a_monte_carlo_estimate(kind):
    """The closed form against the mean squared error on 200 000 fresh samples drawn as the
    dataset draws its splits (so with the source task's input covariance where it has one)."""
    data = generate(KINDS[kind], n_test=200_000)
    update, bias = perturbed(data, 0)
    weight = data["W0"].double() + update
    x, y = data["X_test"].double(), data["y_test"].double()
    monte_carlo = float((x @ weight.T + bias - y).square().mean())
    exact = population.update_risk(data, update, bias)
    assert exact == pytest.approx(monte_carlo, rel=0.01)
    assert exact > 0.04 * 2
    if kind == "source":
        covariance = population.input_covariance(data)
        gap = update - data["delta_W"].double()
        bias_gap = bias - data["b0"].double()
        direct = (((gap @ covariance) * gap).sum() + bias_gap.square().sum()) / 12 + 0.04
        assert exact == pytest.approx(float(direct), rel=1e-12)
        assert exact != pytest.approx(
            population.risk(data, update - data["delta_W"], None), rel=0.01
        )


def test_the_source_directions_are_stored_and_orthonormal():
    data = generate(KINDS["source"])
    directions = data[SOURCE_DIRECTIONS].double()
    assert directions.shape == (20, 4)
    torch.testing.assert_close(directions.T @ directions, torch.eye(4, dtype=torch.float64),
                               atol=1e-6, rtol=0)  # fmt: skip
    assert SOURCE_DIRECTIONS not in generate(LOWRANK).tensors


def lora(**overrides) -> RunSpec:
    base = dict(dataset="t", method="lora", seed=0, lr=0.02, epochs=6, batch_size=64, bias="none",
                device="cpu", rank=2, alpha=4.0, scaling="standard", init="kaiming")  # fmt: skip
    return RunSpec(**{**base, **overrides})


RUNS = {
    "lora": lora(),
    "pissa, bias trains": lora(init="pissa", bias="lora_only"),
    "full": RunSpec(dataset="t", method="full", seed=0, lr=0.01, epochs=6, batch_size=64,
                    bias="none", device="cpu"),
}  # fmt: skip


@pytest.mark.parametrize("name", RUNS)
def test_a_runs_population_loss_is_what_its_final_weights_score_on_fresh_data(name):
    data = generate(KINDS["source"], n_test=40_000)
    result = train_run(RUNS[name], data)
    truth = synthetic.ground_truth(data)
    assert result.status == "ok"
    assert result.test_loss == pytest.approx(result.population_loss, rel=0.02)
    rank = None if RUNS[name].method == "full" else RUNS[name].rank
    bias_trains = RUNS[name].method == "full" or RUNS[name].bias == "lora_only"
    assert result.population_loss >= truth.optimal_loss(rank, bias_trains) * (1 - 1e-6)
    summary = result.summary(truth)
    assert summary["final_test_loss"] == result.test_loss
    assert summary["population_loss"] == result.population_loss


def test_the_test_split_is_never_evaluated_during_training():
    data = generate(LOWRANK)
    for result in (train_run(lora(), data), train_cohort([lora()], data)[0]):
        assert all("test_loss" not in epoch for epoch in result.epochs)
        assert math.isfinite(result.test_loss)


def test_deep_runs_have_a_test_loss_but_no_population_loss():
    data = generate(KINDS["mlp"])
    spec = lora(dataset="m", targets="all", epochs=2, batch_size=None)
    result = train_run(spec, data)
    assert math.isfinite(result.test_loss) and result.population_loss is None
