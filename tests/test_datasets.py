import pytest
import torch

from lorasweep.tasks import storage, synthetic


def spec(**overrides) -> synthetic.DatasetSpec:
    base = dict(
        name="t", kind="lowrank", in_features=24, out_features=16, n_train=200, n_val=50,
        noise_std=0.1, task_rank=3, task_scale=4.0, spectrum_decay=0.5, seed=7,
    )  # fmt: skip
    return synthetic.DatasetSpec(**{**base, **overrides})


@pytest.mark.parametrize("task_rank", [1, 3, 8])
def test_ground_truth_has_the_requested_rank_and_spectrum(task_rank):
    data = synthetic.generate(spec(task_rank=task_rank))
    delta = data["delta_W"].double()
    assert torch.linalg.matrix_rank(delta, rtol=1e-5) == task_rank
    svals = torch.linalg.svdvals(delta)[:task_rank]
    expected = torch.tensor([4.0 * 0.5**i for i in range(task_rank)], dtype=torch.float64)
    torch.testing.assert_close(svals, expected, rtol=1e-5, atol=1e-6)


def test_targets_follow_the_model_up_to_noise():
    data = synthetic.generate(spec(n_train=4000, noise_std=0.2))
    w = (data["W0"] + data["delta_W"]).double()
    residual = data["y_train"].double() - data["X_train"].double() @ w.T - data["b0"].double()
    assert residual.std().item() == pytest.approx(0.2, rel=0.05)


def test_same_seed_same_data_other_seed_other_data():
    a, b = synthetic.generate(spec()), synthetic.generate(spec())
    assert all(torch.equal(a[k], b[k]) for k in a.tensors)
    c = synthetic.generate(spec(seed=8))
    assert not torch.equal(a["delta_W"], c["delta_W"])


def test_changing_sample_count_keeps_the_task():
    a, b = synthetic.generate(spec(n_train=100)), synthetic.generate(spec(n_train=300))
    assert torch.equal(a["W0"], b["W0"]) and torch.equal(a["delta_W"], b["delta_W"])
    assert torch.equal(a["X_val"], b["X_val"])


def test_noise_task_is_independent_noise():
    data = synthetic.generate(
        spec(kind="noise", in_features=64, out_features=10, n_train=1000, noise_std=1.0)
    )
    assert torch.count_nonzero(data["delta_W"]) == 0
    assert data["y_train"].std().item() == pytest.approx(1.0, rel=0.1)
    corr = torch.corrcoef(torch.cat([data["X_train"][:, :3], data["y_train"][:, :3]], 1).T)
    assert corr[:3, 3:].abs().max() < 0.15


def test_optimal_loss_is_eckart_young_plus_noise():
    data = synthetic.generate(spec())
    truth = synthetic.ground_truth(data)
    s = [4.0, 2.0, 1.0]
    assert truth.optimal_loss(0, bias_trains=False) == pytest.approx(
        sum(v * v for v in s) / 16 + 0.01, rel=1e-5
    )
    assert truth.optimal_loss(1, bias_trains=False) == pytest.approx((4 + 1) / 16 + 0.01, rel=1e-5)
    assert truth.optimal_loss(3, bias_trains=False) == pytest.approx(0.01, rel=1e-4)
    assert truth.optimal_loss(None, bias_trains=True) == pytest.approx(0.01)


def test_save_load_round_trip_and_checksum_detects_corruption(tmp_path):
    data = synthetic.generate(spec())
    tensors, meta = tmp_path / "t.safetensors", tmp_path / "t.json"
    storage.save(data, tensors, meta)
    loaded = storage.load(tensors, meta)
    assert all(torch.equal(loaded[k], data[k]) for k in data.tensors)
    assert loaded.spec == data.spec
    raw = tensors.read_bytes()
    tensors.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(storage.DatasetFileError, match="checksum mismatch"):
        storage.load(tensors, meta)
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(storage.DatasetFileError, match="truncated or corrupted"):
        storage.load(tensors, meta)
