"""The source task: where the base is optimal, what the target excites, and forgetting."""

import math

import pytest
import torch

from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import storage, synthetic
from lorasweep.training.exact import cache_base_residuals
from lorasweep.training.loop import train_run

SOURCE = {"n": 2000, "top_directions": 6, "leak": 0.05}


def spec(**overrides) -> synthetic.DatasetSpec:
    base = dict(
        name="s", kind="lowrank", in_features=32, out_features=24, n_train=2000, n_val=500,
        noise_std=0.1, task_rank=3, task_scale=2.0, spectrum_decay=0.7, seed=5,
    )  # fmt: skip
    return synthetic.DatasetSpec.from_config({**base, **overrides})


@pytest.fixture(scope="module")
def with_source():
    return synthetic.generate(spec(source=SOURCE))


def run(**overrides) -> RunSpec:
    base = dict(dataset="s", method="lora", seed=0, lr=0.01, epochs=4, batch_size=250,
                bias="none", device="cpu", rank=4, alpha=8.0, scaling="standard",
                init="kaiming")  # fmt: skip
    return RunSpec(**{**base, **overrides})


def test_without_a_source_nothing_changes():
    plain, other = synthetic.generate(spec()), synthetic.generate(spec(source=SOURCE))
    assert "X_source" not in plain.tensors
    assert torch.equal(plain["W0"], other["W0"]) and torch.equal(plain["b0"], other["b0"])
    assert "source" not in spec().as_dict()


def test_source_inputs_live_on_the_top_directions_of_w0(with_source):
    directions = synthetic.source_directions(with_source["W0"], spec(source=SOURCE).source)
    inside = torch.eye(32, dtype=torch.float64) - directions @ directions.T
    x_src, x_tgt = with_source["X_source"].double(), with_source["X_train"].double()
    on_src = (x_src @ directions).square().sum(1).mean()
    off_src = (x_src @ inside).square().sum(1).mean()
    assert on_src == pytest.approx(6, rel=0.1) and off_src == pytest.approx(0.05 * 26, rel=0.1)
    on_tgt = (x_tgt @ directions).square().sum(1).mean()
    off_tgt = (x_tgt @ inside).square().sum(1).mean()
    assert on_tgt == pytest.approx(0.05 * 6, rel=0.1) and off_tgt == pytest.approx(26, rel=0.1)
    shift_on_source = with_source["delta_W"].double() @ directions
    assert shift_on_source.abs().max() < 1e-6, "ΔW* must not act on the source directions"


def test_the_base_is_optimal_on_the_source_and_the_optimum_is_unchanged(with_source):
    w0, b0 = with_source["W0"].double(), with_source["b0"].double()
    residual = with_source["y_source"].double() - with_source["X_source"].double() @ w0.T - b0
    assert residual.square().mean().item() == pytest.approx(0.01, rel=0.05)
    truth = synthetic.ground_truth(with_source)
    s = [2.0 * 0.7**i for i in range(3)]
    assert truth.optimal_loss(1, False) == pytest.approx((s[1] ** 2 + s[2] ** 2) / 24 + 0.01)


def test_source_spec_survives_a_round_trip(with_source, tmp_path):
    storage.save(with_source, tmp_path / "s.safetensors", tmp_path / "s.json")
    loaded = storage.load(tmp_path / "s.safetensors", tmp_path / "s.json")
    assert loaded.spec == with_source.spec and loaded.spec.source.top_directions == 6
    assert torch.equal(loaded["X_source"], with_source["X_source"])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_forgetting_is_zero_for_an_untrained_run(with_source, method):
    result = train_run(run(method=method, lr=0.0), with_source)
    assert result.summary(None)["forgetting"] == 0.0
    assert result.epochs[0]["source_loss"] == pytest.approx(0.01, rel=0.1)


def test_forgetting_is_positive_for_a_run_pushed_off_the_source_optimum(with_source):
    result = train_run(run(method="full", lr=0.05, epochs=6), with_source)
    summary = result.summary(None)
    assert summary["forgetting"] > 0.01
    assert summary["forgetting"] == summary["final_source_loss"] - result.epochs[0]["source_loss"]
    assert [e["epoch"] for e in result.epochs] == list(range(7))
    assert all(math.isfinite(e["source_loss"]) for e in result.epochs)


def test_runs_without_a_source_record_no_source_columns():
    result = train_run(run(), synthetic.generate(spec()))
    assert "source_loss" not in result.epochs[0] and "forgetting" not in result.summary(None)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"init": "pissa", "bias": "lora_only"}, {"batch_size": None}, {"dropout": 0.2}],
)
def test_source_loss_of_the_exact_paths_matches_the_reference(with_source, overrides):
    spec_ = run(**overrides)
    fast = train_run(spec_, with_source, use_cache=True)
    plain = train_run(spec_, with_source, use_cache=False)
    for a, b in zip(fast.epochs, plain.epochs, strict=True):
        assert a["source_loss"] == pytest.approx(b["source_loss"], rel=1e-5)


def test_residuals_cached_per_dataset_include_the_source_split(with_source):
    reference = train_run(run(), with_source)
    cached = synthetic.Dataset(with_source.spec, dict(with_source.tensors))
    cache_base_residuals(cached, [run()])
    assert "r_source" in cached.tensors and "W0" not in cached.tensors
    result = train_run(run(), cached)
    assert [e["source_loss"] for e in result.epochs] == [e["source_loss"] for e in reference.epochs]
