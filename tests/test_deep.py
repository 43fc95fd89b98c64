"""Deep models: module names, the teacher's known shifts, LoRA across layers, counts, runs."""

import math

import pytest
import torch
from torch import nn

from lorasweep.io import load_metadata, load_tensors, read_json
from lorasweep.jobs.job import run_job
from lorasweep.models import networks
from lorasweep.models.accounting import count_parameters, training_state_bytes
from lorasweep.models.lora import lora_layers
from lorasweep.models.names import linear_modules, pattern_label, select
from lorasweep.planning.runs import RunSpec
from lorasweep.tables.geometry import geometry_tables
from lorasweep.tasks import deep, storage, synthetic
from lorasweep.training.exact import cache_base_residuals
from lorasweep.training.loop import build_model, train_run

CPU = torch.device("cpu")
TRANSFORMER = dict(name="tf", kind="transformer", d_model=8, n_heads=2, n_layers=2, seq_len=3,
                   d_ff=12, shifted="mlp", task_rank=2, task_scale=2.0, spectrum_decay=0.5,
                   noise_std=0.1, n_train=64, n_val=16, seed=3)  # fmt: skip
MLP = dict(name="net", kind="mlp", in_features=5, out_features=3, d_model=8, n_layers=3,
           shifted="all", task_rank=2, task_scale=2.0, spectrum_decay=0.5, noise_std=0.1,
           n_train=64, n_val=16, seed=4)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dataset(entry, **overrides):
    return synthetic.generate(synthetic.DatasetSpec.from_config({**entry, **overrides}))


@pytest.fixture(scope="module")
def tf():
    return dataset(TRANSFORMER)


@pytest.fixture(scope="module")
def net():
    return dataset(MLP)


def lora(name="tf", targets="all", **overrides) -> RunSpec:
    base = dict(dataset=name, method="lora", seed=0, lr=0.01, epochs=3, batch_size=16,
                bias="none", device="cpu", rank=2, alpha=4.0, scaling="standard",
                init="kaiming", targets=targets)  # fmt: skip
    return RunSpec(**{**base, **overrides})


def full(name="tf", **overrides) -> RunSpec:
    base = dict(dataset=name, method="full", seed=0, lr=0.01, epochs=3, batch_size=16,
                bias="none", device="cpu")  # fmt: skip
    return RunSpec(**{**base, **overrides})


@pytest.mark.parametrize("entry", [TRANSFORMER, MLP], ids=["transformer", "mlp"])
def test_networks_have_the_documented_module_names_and_shapes(entry):
    spec = synthetic.DatasetSpec.from_config(entry)
    network = networks.build_network(spec, device="meta")
    built = {
        name: (m.in_features, m.out_features)
        for name, m in network.named_modules()
        if isinstance(m, nn.Linear)
    }
    described = {m.name: (m.in_features, m.out_features) for m in linear_modules(spec.as_dict())}
    assert list(built.items()) == list(described.items())
    if entry["kind"] == "transformer":
        assert "blocks.1.attn.q" in built and built["blocks.0.mlp.up"] == (8, 12)
    else:
        assert list(built) == ["layers.0", "layers.1", "layers.2"]
        assert built["layers.0"] == (5, 8) and built["layers.2"] == (8, 3)


def test_presets_and_patterns_select_modules_like_peft_target_modules():
    modules = linear_modules({**TRANSFORMER})
    names = lambda pattern: [m.name for m in select(modules, pattern)]  # noqa: E731
    assert names("attention") == [f"blocks.{i}.attn.{t}" for i in (0, 1) for t in "qkvo"]
    assert names("mlp") == [f"blocks.{i}.mlp.{t}" for i in (0, 1) for t in ("up", "down")]
    assert len(names("all")) == 12
    assert names("q|v") == [f"blocks.{i}.attn.{t}" for i in (0, 1) for t in "qv"]
    assert names(r"blocks\.1\.mlp\..*") == ["blocks.1.mlp.up", "blocks.1.mlp.down"]
    assert names("attn") == [] and names("xyz") == []
    assert [m.name for m in select(linear_modules(MLP), "mlp")] == [
        "layers.0",
        "layers.1",
        "layers.2",
    ]
    assert select(linear_modules(MLP), "attention") == []
    assert pattern_label("attention") == "attention" and pattern_label("q|v") == "q+v"
    assert pattern_label(r"blocks\.1\..*").startswith("blocks-1-")
    assert pattern_label(r"blocks\.1\..*") != pattern_label(r"blocks\.1\.*")


def teacher_output(data, x: torch.Tensor) -> torch.Tensor:
    """f*(x) in float64, built from the stored base weights plus the stored shifts."""
    network = networks.build_network(data.spec, dtype=torch.float64)
    state = {k: data[k].double() for k in network.state_dict()}
    for name in deep.shifted_modules(data.spec):
        state[f"{name}.weight"] = state[f"{name}.weight"] + data[f"{name}.delta_weight"].double()
    network.load_state_dict(state)
    with torch.no_grad():
        return network(x.double())


@pytest.mark.parametrize("entry", [TRANSFORMER, MLP], ids=["transformer", "mlp"])
def test_the_teacher_differs_from_the_base_exactly_by_the_declared_shifts(entry):
    data = dataset(entry, noise_std=0.0, n_train=256)
    modules = linear_modules(data.spec.as_dict())
    shifted = {m.name for m in select(modules, entry["shifted"])}
    stored = {
        k.removesuffix(deep.SHIFT_SUFFIX) for k in data.tensors if k.endswith(deep.SHIFT_SUFFIX)
    }
    assert stored == shifted
    expected = torch.tensor([2.0, 1.0], dtype=torch.float64)
    for name in shifted:
        delta = data[f"{name}{deep.SHIFT_SUFFIX}"].double()
        assert torch.linalg.matrix_rank(delta, rtol=1e-5) == 2
        torch.testing.assert_close(torch.linalg.svdvals(delta)[:2], expected, rtol=1e-5, atol=1e-6)
    x = data["X_train"]
    torch.testing.assert_close(
        data["y_train"].double(), teacher_output(data, x), rtol=1e-5, atol=1e-5
    )
    with torch.no_grad():
        base = networks.load_base(data, CPU)(x)
    assert (base.double() - data["y_train"].double()).square().mean() > 0.01
    truth = synthetic.ground_truth(data)
    assert set(truth.singular_values) == shifted
    assert truth.optimal_loss(None, True) == 0.0


def test_targets_follow_the_teacher_up_to_noise(tf):
    data = dataset(TRANSFORMER, n_train=2000)
    residual = data["y_train"].double() - teacher_output(data, data["X_train"])
    assert residual.std().item() == pytest.approx(0.1, rel=0.05)
    again = dataset(TRANSFORMER, n_train=2000)
    assert all(torch.equal(data[k], again[k]) for k in data.tensors)
    assert torch.equal(data["blocks.0.mlp.up.weight"], tf["blocks.0.mlp.up.weight"])


@pytest.mark.parametrize(
    ("name", "targets"),
    [("tf", "attention"), ("tf", "mlp"), ("tf", "all"), ("tf", "q|v"), ("tf", r"blocks\.1\..*"),
     ("net", "all"), ("net", r"layers\.1")],
)  # fmt: skip
def test_zero_b_lora_on_any_targets_leaves_the_output_unchanged(tf, net, name, targets):
    data = {"tf": tf, "net": net}[name]
    x = data["X_val"]
    with torch.no_grad():
        expected = networks.load_base(data, CPU)(x)
        model = build_model(lora(name, targets), data, CPU)
        assert torch.equal(model(x), expected)
    layers = dict(lora_layers(model))
    assert list(layers) == [m.name for m in select(linear_modules(data.spec.as_dict()), targets)]
    assert all(torch.count_nonzero(layer.lora_B) == 0 for layer in layers.values())


def test_merge_and_unmerge_across_all_adapted_layers_is_exact(tf):
    model = build_model(lora(targets="all", init="randn", scaling="constant", alpha=0.1), tf, CPU)
    x = tf["X_val"]
    layers = [layer for _, layer in lora_layers(model)]
    before = [layer.base.weight.detach().clone() for layer in layers]
    with torch.no_grad():
        unmerged = model(x)
        for layer in layers:
            layer.merge()
        torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)
        for layer, w0 in zip(layers, before, strict=True):
            torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight(), rtol=0, atol=0)
        for layer in layers:
            layer.unmerge()
        for layer, w0 in zip(layers, before, strict=True):
            torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("name", "targets"), [("tf", "attention"), ("tf", "q|v"), ("net", "all")])
@pytest.mark.parametrize("rank", [1, 2])
def test_counts_are_the_sum_over_adapted_matrices(tf, net, name, targets, rank):
    data = {"tf": tf, "net": net}[name]
    model = build_model(lora(name, targets, rank=rank), data, CPU)
    adapted = select(linear_modules(data.spec.as_dict()), targets)
    expected = sum(rank * (m.in_features + m.out_features) for m in adapted)
    counts = count_parameters(model)
    base_total = sum(p.numel() for p in networks.load_base(data, CPU).parameters())
    assert counts.trainable == counts.adapter == expected
    assert counts.frozen == base_total and counts.total == base_total + expected
    assert training_state_bytes(model) == 4 * expected * 4
    whole = count_parameters(build_model(full(name), data, CPU))
    assert (whole.trainable, whole.frozen, whole.adapter) == (base_total, 0, 0)


def test_deep_runs_use_the_reference_loss_and_never_cache_residuals(tf):
    job_data = synthetic.Dataset(tf.spec, dict(tf.tensors))
    specs = [lora(), lora(init="pissa"), full()]
    cache_base_residuals(job_data, specs)
    assert job_data.tensors.keys() == tf.tensors.keys()
    result = train_run(lora(), tf)
    assert not result.cached_base and result.status == "ok"
    assert result.adapted == tuple(m.name for m in linear_modules(tf.spec.as_dict()))
    with pytest.raises(ValueError, match="single unmerged LoRA layer"):
        train_run(lora(), tf, use_cache=True)


def test_deep_runs_are_deterministic_and_leave_the_global_rng_alone(tf):
    state = torch.random.get_rng_state()
    spec = lora(targets="mlp", dropout=0.2, init="gaussian")
    a, b = train_run(spec, tf), train_run(spec, tf)
    assert a.epochs == b.epochs
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert torch.equal(torch.random.get_rng_state(), state)
    other = train_run(lora(targets="mlp", dropout=0.2, init="gaussian", seed=1), tf)
    assert not torch.equal(
        a.tensors["blocks.0.mlp.up.lora_A"], other.tensors["blocks.0.mlp.up.lora_A"]
    )
    assert a.final["val_loss"] < a.epochs[0]["val_loss"]
    assert all(math.isfinite(e["grad_norm_A"]) for e in a.epochs[1:])


def test_a_diverging_deep_run_is_recorded_not_raised(net):
    result = train_run(lora("net", lr=1e30, epochs=5), net)
    assert result.status == "diverged" and 1 <= result.diverged_epoch <= 5
    assert math.isnan(result.final["val_loss"])
    full_ft = train_run(full("net", lr=1e30, epochs=5), net)
    assert full_ft.status == "diverged"


def test_a_job_writes_each_layers_adapter_and_the_truth_it_reached(tmp_path, tf):
    files = {"tf": (tmp_path / "tf.safetensors", tmp_path / "tf.json")}
    storage.save(tf, *files["tf"])
    meta = read_json(files["tf"][1])
    assert meta["spec"]["shifted"] == "mlp" and "delta_W" not in meta["shapes"]
    assert set(meta["ground_truth"]["singular_values"]) == set(deep.shifted_modules(tf.spec))
    specs = [lora(targets="mlp", init="pissa", bias="lora_only"), lora(targets="attention"), full()]
    runs = tmp_path / "runs"
    counts = run_job([s.as_dict() for s in specs], files, runs, tmp_path / "a.json", progress=False)
    assert counts == {"trained": 3, "reused": 0}
    pissa, attention, whole = (runs / s.run_id for s in specs)
    assert pissa.name == "tf__lora-mlp_r2_a4_standard_pissa_lr0.01_biasall_s0"
    tensors = load_tensors(pissa / "weights.safetensors")
    assert {k.rsplit(".", 1)[1] for k in tensors} == {"lora_A", "lora_B", "bias", "lora_A_init",
                                                      "lora_B_init"}  # fmt: skip
    assert load_metadata(pissa / "weights.safetensors")["modules"] == [
        "blocks.0.mlp.up", "blocks.0.mlp.down", "blocks.1.mlp.up", "blocks.1.mlp.down"
    ]  # fmt: skip
    metrics = {p.name: read_json(p / "metrics.json") for p in (pissa, attention, whole)}
    assert metrics[pissa.name]["optimal_val_loss"] == pytest.approx(0.01)
    assert metrics[pissa.name]["adapted_types"] == "up+down"
    assert metrics[attention.name]["optimal_val_loss"] is None
    assert metrics[attention.name]["adapted_modules"] == 8
    assert metrics[whole.name]["optimal_val_loss"] == pytest.approx(0.01)
    assert set(load_tensors(whole / "weights.safetensors")) == set(
        networks.build_network(tf.spec, device="meta").state_dict()
    )
    assert read_json(whole / "provenance.json")["dataset"]["spec"]["kind"] == "transformer"


def test_geometry_has_a_row_per_changed_layer_against_its_own_truth(tmp_path, tf):
    files = {"tf": (tmp_path / "tf.safetensors", tmp_path / "tf.json")}
    storage.save(tf, *files["tf"])
    specs = [lora(targets="mlp", init="pissa", epochs=2), lora(targets="q|v", epochs=2), full()]
    runs = tmp_path / "runs"
    run_job([s.as_dict() for s in specs], files, runs, tmp_path / "a.json", progress=False)
    per_run, pairs = geometry_tables([runs / s.run_id for s in specs], {"tf": tf})
    assert pairs.empty, "φ between adapters compares single layers only"
    rows = per_run.groupby("run_id")["layer"].apply(list).to_dict()
    assert rows[specs[0].run_id] == deep.shifted_modules(tf.spec)
    assert rows[specs[1].run_id] == [f"blocks.{i}.attn.{t}" for i in (0, 1) for t in "qv"]
    assert len(rows[specs[2].run_id]) == 12
    shifted = per_run["layer"].str.contains("mlp")
    assert per_run.loc[shifted, "phi_true_right"].between(0, 1 + 1e-9).all()
    assert per_run.loc[~shifted, "phi_true_right"].isna().all()
    weights = load_tensors(runs / specs[0].run_id / "weights.safetensors")
    scaling = load_metadata(runs / specs[0].run_id / "weights.safetensors")["scaling"]
    name = "blocks.1.mlp.down"
    delta = scaling * (
        weights[f"{name}.lora_B"].double() @ weights[f"{name}.lora_A"].double()
        - weights[f"{name}.lora_B_init"].double() @ weights[f"{name}.lora_A_init"].double()
    )
    row = per_run[(per_run["run_id"] == specs[0].run_id) & (per_run["layer"] == name)].iloc[0]
    assert row["delta_norm"] == pytest.approx(float(torch.linalg.matrix_norm(delta)), rel=1e-12)
