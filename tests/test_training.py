import math

import pytest
import torch

from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import synthetic
from lorasweep.training.devices import DeviceUnavailableError, resolve_device
from lorasweep.training.loop import train_run


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(
        synthetic.DatasetSpec(
            name="d", kind="lowrank", in_features=32, out_features=24, n_train=512,
                       n_val=128, noise_std=0.05, task_rank=2, task_scale=3.0, spectrum_decay=0.5)
    )  # fmt: skip


def lora(**overrides) -> RunSpec:
    base = dict(dataset="d", method="lora", seed=0, lr=0.01, epochs=5, batch_size=64, bias="none",
                device="cpu", rank=4, alpha=8.0, scaling="standard", init="kaiming")  # fmt: skip
    return RunSpec(**{**base, **overrides})


def test_cached_base_matches_uncached_path(data):
    for spec in (
        lora(),
        lora(init="pissa", bias="lora_only"),
        lora(dropout=0.2),
        lora(batch_size=None),
    ):
        cached = train_run(spec, data, use_cache=True)
        plain = train_run(spec, data, use_cache=False)
        assert cached.cached_base and not plain.cached_base
        for a, b in zip(cached.epochs, plain.epochs, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_sufficient_statistics_path_is_used_when_it_pays_off(data):
    from lorasweep.training.exact import can_use_gram
    from lorasweep.training.loop import build_model

    model = build_model(lora(), data, torch.device("cpu"))
    assert can_use_gram(model, batch_size=512, n_train=512)
    assert not can_use_gram(model, batch_size=64, n_train=512)
    assert not can_use_gram(model, batch_size=64, n_train=64), "XᵀX and RᵀX would outweigh R"
    assert not can_use_gram(model, batch_size=16, n_train=16)
    assert not can_use_gram(build_model(lora(dropout=0.1), data, torch.device("cpu")), 512, 512)


def test_sufficient_statistics_path_matches_the_direct_loss(data):
    for spec in (lora(batch_size=None), lora(batch_size=None, bias="lora_only", init="randn")):
        fast = train_run(spec, data)
        plain = train_run(spec, data, use_cache=False)
        assert fast.cached_base
        for a, b in zip(fast.epochs, plain.epochs, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        for name in fast.tensors:
            torch.testing.assert_close(
                fast.tensors[name], plain.tensors[name], rtol=1e-4, atol=1e-5
            )


def test_cached_losses_equal_the_layers_own_mse_for_random_adapters(data):
    from lorasweep.training.exact import GramLoss, ResidualLoss
    from lorasweep.training.loop import build_model

    model = build_model(lora(init="randn", bias="lora_only"), data, torch.device("cpu"))
    splits = {"train": (data["X_train"], data["y_train"])}
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model(data["X_train"]), data["y_train"]).item()
        assert GramLoss(model, splits)("train") == pytest.approx(expected, rel=1e-6)
        assert ResidualLoss(model, splits)("train") == pytest.approx(expected, rel=1e-6)


def test_row_chunks_accumulate_the_full_batch_gradient(data, monkeypatch):
    from lorasweep.training import exact

    monkeypatch.setattr(exact, "CHUNK_ELEMENTS", 24 * 50)
    for spec in (lora(batch_size=256, bias="lora_only"), lora(batch_size=None, dropout=0.2)):
        chunked = train_run(spec, data)
        plain = train_run(spec, data, use_cache=False)
        for a, b in zip(chunked.epochs, plain.epochs, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
            assert a["grad_norm_B"] == pytest.approx(b["grad_norm_B"], rel=1e-4, nan_ok=True)


def _copy(dataset: synthetic.Dataset) -> synthetic.Dataset:
    return synthetic.Dataset(dataset.spec, {k: v.clone() for k, v in dataset.tensors.items()})


def test_lora_only_job_trains_on_residuals_in_place_of_y_and_w0(data):
    from lorasweep.training.exact import cache_base_residuals

    specs = [lora(), lora(rank=2, batch_size=None), lora(dropout=0.1, bias="lora_only")]
    job_data = _copy(data)
    cache_base_residuals(job_data, specs)
    assert {"W0", "y_train", "y_val"}.isdisjoint(job_data.tensors)
    expected = data["y_val"] - data["X_val"] @ data["W0"].T
    torch.testing.assert_close(job_data["r_val"], expected, rtol=1e-5, atol=1e-6)
    for spec in specs:
        alone, in_job = train_run(spec, data), train_run(spec, job_data)
        assert in_job.epochs == alone.epochs, "per-dataset residuals must be bitwise the same"
        assert all(torch.equal(alone.tensors[k], in_job.tensors[k]) for k in alone.tensors)
        assert in_job.counts == alone.counts


def test_mixed_job_keeps_what_full_ft_and_pissa_need(data):
    from lorasweep.training.exact import cache_base_residuals

    full = RunSpec(dataset="d", method="full", seed=0, lr=0.01, epochs=2, batch_size=64,
                   bias="none", device="cpu")  # fmt: skip
    specs = [lora(), lora(init="pissa"), full]
    job_data = _copy(data)
    cache_base_residuals(job_data, specs)
    assert {"W0", "y_train", "r_train"} <= set(job_data.tensors)
    torch.testing.assert_close(job_data["y_train"], data["y_train"], rtol=0, atol=0)
    for spec in specs:
        assert train_run(spec, job_data).epochs == train_run(spec, data).epochs
    lora_only = _copy(data)
    cache_base_residuals(lora_only, [lora()])
    with pytest.raises(ValueError, match="needs W₀, which this job released"):
        train_run(full, lora_only)
    with pytest.raises(ValueError, match="needs the targets y"):
        train_run(lora(), lora_only, use_cache=False)


def test_cache_is_automatic_for_lora_and_off_for_full_ft(data):
    assert train_run(lora(epochs=1), data).cached_base
    full = RunSpec(dataset="d", method="full", seed=0, lr=0.01, epochs=1, batch_size=64,
                   bias="none", device="cpu")  # fmt: skip
    assert not train_run(full, data).cached_base


def test_same_spec_gives_identical_results_and_leaves_global_rng_alone(data):
    state = torch.random.get_rng_state()
    a = train_run(lora(dropout=0.1), data)
    b = train_run(lora(dropout=0.1), data)
    assert a.epochs == b.epochs
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_seeds_change_init_and_order(data):
    a, b = train_run(lora(seed=0), data), train_run(lora(seed=1), data)
    assert not torch.equal(a.tensors["lora_A"], b.tensors["lora_A"])


def test_lora_learns_the_task_and_full_ft_trains_every_parameter(data):
    result = train_run(lora(epochs=40, rank=2), data)
    truth = synthetic.ground_truth(data)
    assert result.status == "ok"
    assert result.final["val_loss"] < 0.2 * result.epochs[0]["val_loss"]
    assert result.final["val_loss"] < 2.0 * truth.optimal_loss(2, bias_trains=False)
    full = train_run(
        RunSpec(dataset="d", method="full", seed=0, lr=0.01, epochs=2, batch_size=64,
                bias="none", device="cpu"),
        data,
    )  # fmt: skip
    assert full.counts.trainable == 32 * 24 + 24 and full.counts.frozen == 0


def test_divergence_is_recorded_not_raised(data):
    result = train_run(lora(lr=1e6, alpha=1e6, init="randn", scaling="constant", epochs=20), data)
    assert result.status == "diverged"
    assert 1 <= result.diverged_epoch <= 20
    assert math.isnan(result.final["val_loss"])
    assert len(result.epochs) == result.diverged_epoch + 1


def test_epoch_zero_is_the_untrained_model(data):
    result = train_run(lora(), data)
    assert result.epochs[0]["epoch"] == 0
    assert len(result.epochs) == 6
    assert result.epochs[0]["val_loss"] > result.final["val_loss"]


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="train.device is 'cuda'.*'auto' or 'cpu'"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_fused_gradients_equal_autograd_of_the_layer(data, monkeypatch):
    from lorasweep.training import exact
    from lorasweep.training.exact import ResidualLoss
    from lorasweep.training.loop import build_model

    monkeypatch.setattr(exact, "CHUNK_ELEMENTS", 24 * 50)
    model = build_model(lora(init="randn", bias="lora_only"), data, torch.device("cpu"))
    x, y = data["X_train"], data["y_train"]
    torch.nn.functional.mse_loss(model(x), y).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    assert set(expected) == {"base.bias", "lora_A", "lora_B"}
    model.zero_grad(set_to_none=True)
    ResidualLoss(model, {"train": (x, y)})("train", backward=True)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_sufficient_statistics_stay_exact_near_the_optimum():
    """A signal ~190× the noise: the terms of the statistics' loss nearly cancel."""
    spec = lora(batch_size=None, epochs=60, rank=2, lr=0.05, bias="lora_only")
    big = synthetic.generate(
        synthetic.DatasetSpec(
            name="d", kind="lowrank", in_features=32, out_features=24, n_train=512,
                       n_val=128, noise_std=0.05, task_rank=2, task_scale=3.0, spectrum_decay=0.5)
    )  # fmt: skip
    fast, plain = train_run(spec, big), train_run(spec, big, use_cache=False)
    assert fast.final["val_loss"] < 0.01 * fast.epochs[0]["val_loss"], "it must get near"
    for a, b in zip(fast.epochs, plain.epochs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
