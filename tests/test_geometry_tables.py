"""ΔW = W_final − W₀ of a run comes from what the run stored: its scale s and, where the frozen
base is W₀ − s·B₀A₀ (PiSSA), A₀ and B₀."""

import pytest
import torch

from lorasweep.io import save_tensors, write_json
from lorasweep.tables.geometry import MissingInitError, geometry_tables, run_update

D_OUT, D_IN, RANK, SCALE = 6, 5, 2, 0.75


def factors(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "lora_A": torch.randn(RANK, D_IN, generator=gen),
        "lora_B": torch.randn(D_OUT, RANK, generator=gen),
    }


def fake_run(root, init: str, tensors: dict, run_id: str = "run"):
    run_dir = root / run_id
    metrics = {
        "run_id": run_id, "dataset": "d", "method": "lora", "rank": RANK, "init": init,
        "status": "ok", "seed": 0, "final_val_loss": 1.0,
    }  # fmt: skip
    metadata = {"method": "lora", "rank": RANK, "init": init, "scaling": SCALE}
    save_tensors(run_dir / "weights.safetensors", tensors, metadata=metadata)
    write_json(run_dir / "metrics.json", metrics)
    return run_dir, metrics


def expected(tensors: dict) -> torch.Tensor:
    a, b = tensors["lora_A"].double(), tensors["lora_B"].double()
    delta = b @ a
    if "lora_A_init" in tensors:
        delta -= tensors["lora_B_init"].double() @ tensors["lora_A_init"].double()
    return SCALE * delta


def test_pissa_subtracts_the_initial_product(tmp_path):
    start, end = factors(0), factors(1)
    tensors = {**end, "lora_A_init": start["lora_A"], "lora_B_init": start["lora_B"]}
    run_dir, metrics = fake_run(tmp_path, "pissa", tensors)
    delta = run_update(run_dir, metrics, torch.zeros(D_OUT, D_IN))
    torch.testing.assert_close(delta, expected(tensors), rtol=0, atol=0)
    untrained = {
        **start,
        "lora_A_init": start["lora_A"].clone(),
        "lora_B_init": start["lora_B"].clone(),
    }
    run_dir, metrics = fake_run(tmp_path, "pissa", untrained, run_id="untrained")
    assert not run_update(run_dir, metrics, torch.zeros(D_OUT, D_IN)).any()


@pytest.mark.parametrize("init", ["kaiming", "gaussian", "randn"])
def test_inits_that_keep_w0_frozen_use_s_times_ba(tmp_path, init):
    run_dir, metrics = fake_run(tmp_path, init, factors(0))
    delta = run_update(run_dir, metrics, torch.zeros(D_OUT, D_IN))
    torch.testing.assert_close(delta, expected(factors(0)), rtol=0, atol=0)


def test_missing_initial_factors_name_the_run_folder(tmp_path):
    run_dir, metrics = fake_run(tmp_path, "pissa", factors(0))
    with pytest.raises(MissingInitError, match=str(run_dir)):
        run_update(run_dir, metrics, torch.zeros(D_OUT, D_IN))


def test_geometry_table_reads_the_stored_update(tmp_path):
    start, end = factors(0), factors(1)
    tensors = {**end, "lora_A_init": start["lora_A"], "lora_B_init": start["lora_B"]}
    run_dir, _ = fake_run(tmp_path, "pissa", tensors)
    gen = torch.Generator().manual_seed(2)
    data = {"W0": torch.randn(D_OUT, D_IN, generator=gen), "delta_W": torch.zeros(D_OUT, D_IN)}
    per_run, pairs = geometry_tables([run_dir], {"d": data})
    assert per_run["delta_norm"].tolist() == [float(torch.linalg.matrix_norm(expected(tensors)))]
    assert pairs.empty


@pytest.mark.parametrize("init", ["kaiming", "pissa"])
def test_a_dora_runs_update_is_its_merged_weight_minus_w0(tmp_path, init):
    """ΔW of DoRA is m ⊙ (W + s·BA)/‖W + s·BA‖ − W₀ of the frozen W (the residual for PiSSA),
    what the trained module's own merge gives."""
    import json

    from lorasweep.jobs.run_folder import write_run
    from lorasweep.planning.runs import RunSpec
    from lorasweep.tasks import synthetic
    from lorasweep.training.loop import build_model, train_run

    data = synthetic.generate(
        synthetic.DatasetSpec(name="d", kind="lowrank", in_features=D_IN, out_features=D_OUT,
                              n_train=64, n_val=16, noise_std=0.1, task_rank=2, task_scale=2.0,
                              spectrum_decay=0.5)
    )  # fmt: skip
    spec = RunSpec("d", "dora", 0, 0.05, 3, None, "none", "cpu", RANK, 2.0, "standard", init)
    result = train_run(spec, data)
    run_dir = tmp_path / spec.run_id
    write_run(run_dir, result, None, {})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    delta = run_update(run_dir, metrics, data["W0"])
    model = build_model(spec, data, torch.device("cpu"))
    with torch.no_grad():
        for key in ("lora_A", "lora_B", "magnitude"):
            getattr(model, key).copy_(result.tensors[key])
        model.merge()
    merged = model.base.weight.double() - data["W0"].double()
    torch.testing.assert_close(delta, merged, rtol=1e-5, atol=1e-6)
    assert delta.abs().max() > 1e-3
    assert not torch.allclose(delta, expected_lora(result, spec), atol=1e-4)


def expected_lora(result, spec):
    """What reading the DoRA run as LoRA (s·BA) would give, which must not be its ΔW."""
    from lorasweep.models.scaling import scaling_factor

    a, b = result.tensors["lora_A"].double(), result.tensors["lora_B"].double()
    return scaling_factor(spec.scaling, spec.alpha, spec.rank) * (b @ a)
