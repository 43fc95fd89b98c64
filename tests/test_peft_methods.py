"""Every method trained through real PEFT: PEFT wraps the single layer and the transformer, the
run trains, saves with ``save_pretrained``, and reloads with ``PeftModel.from_pretrained`` to
the same outputs; its count is PEFT's; its stored merged change reproduces the model."""

import json

import pytest
import torch

from lorasweep.io import load_tensors
from lorasweep.jobs.run_folder import write_run
from lorasweep.models import peft_format, registry
from lorasweep.options import PEFT_METHODS
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import synthetic
from lorasweep.training import peft_trainer
from lorasweep.training.peft_trainer import train_peft_run

from .conftest import required_in_ci

pytestmark = [pytest.mark.peft, pytest.mark.usefixtures("one_torch_thread")]

CPU = torch.device("cpu")
LAYER = dict(
    name="layer24",
    kind="lowrank",
    in_features=24,
    out_features=16,
    n_train=128,
    n_val=32,
    noise_std=0.1,
    task_rank=2,
    task_scale=2.0,
    spectrum_decay=0.5,
    seed=3,
)
TRANSFORMER = dict(name="tf", kind="transformer", d_model=8, n_heads=2, n_layers=2, seq_len=3,
                   d_ff=12, shifted="mlp", task_rank=2, task_scale=2.0, spectrum_decay=0.5,
                   noise_std=0.1, n_train=64, n_val=16, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def peft():
    try:
        import peft
    except ImportError:
        required_in_ci("LORASWEEP_REQUIRE_PEFT", "PEFT is not installed (pip install -e '.[dev]')")
    return peft


@pytest.fixture(scope="module")
def datasets():
    return {
        entry["name"]: synthetic.generate(synthetic.DatasetSpec.from_config(entry))
        for entry in (LAYER, TRANSFORMER)
    }


def spec(method: str, dataset: str, **overrides) -> RunSpec:
    record = registry.method(method)
    fields = dict(dataset=dataset, method=method, seed=0, lr=0.01, epochs=2, batch_size=32,
                  bias="none", device="cpu", targets="all" if dataset == "tf" else None,
                  rank=4 if record.rank_keyword else None,
                  alpha=8.0 if record.alpha_keyword else None)  # fmt: skip
    return RunSpec(**{**fields, **overrides})


def test_every_peft_method_has_a_config_class_and_documented_settings(peft):
    for name in PEFT_METHODS:
        record = registry.method(name)
        config = getattr(peft, record.peft_config)
        fields = set(config.__dataclass_fields__)
        assert set(record.settings) <= fields, name
        for keyword in (record.rank_keyword, record.alpha_keyword, *dict(record.peft_defaults)):
            assert keyword is None or keyword in fields, (name, keyword)


@pytest.mark.parametrize("dataset", ["layer24", "tf"])
@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_trains_saves_and_reloads_each_method(peft, datasets, tmp_path, method, dataset):
    data = datasets[dataset]
    run = spec(method, dataset)
    result = train_peft_run(run, data, CPU)
    assert result.status == "ok", result.epochs
    assert result.epochs[-1]["train_loss"] != result.epochs[0]["train_loss"]

    fresh = peft_trainer.wrap(run, data, CPU)
    peft_trainer.optimizer_for(run, fresh)
    assert result.counts.trainable == fresh.get_nb_trainable_parameters()[0] > 0

    write_run(tmp_path / run.run_id, result, synthetic.ground_truth(data), {})
    folder = tmp_path / run.run_id / "peft"
    assert sorted(p.name for p in folder.iterdir()) == sorted(peft_trainer.SAVED_FILES)
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"]
    loaded = peft.PeftModel.from_pretrained(peft_trainer.base_model(data, CPU), folder)
    loaded.eval()
    x = data["X_val"]
    with torch.no_grad():
        reloaded = loaded(x)
    val_loss = float(torch.nn.functional.mse_loss(reloaded, data["y_val"]))
    assert val_loss == pytest.approx(result.epochs[-1]["val_loss"], rel=1e-4)

    merged = peft_trainer.base_model(data, CPU)
    stored = load_tensors(tmp_path / run.run_id / "weights.safetensors")
    deep = dataset == "tf"
    for name in peft_trainer.target_modules(run, data):
        prefix = f"{name}." if deep else ""
        module = merged.get_submodule(name)
        with torch.no_grad():
            module.weight += stored[f"{prefix}delta_weight"]
            if f"{prefix}bias" in stored:
                module.bias.copy_(stored[f"{prefix}bias"])
    with torch.no_grad():
        error = torch.linalg.vector_norm(merged(x) - reloaded) / torch.linalg.vector_norm(reloaded)
    assert float(error) < 1e-5


def test_a_peft_run_is_reproducible_and_its_lr_only_changes_the_steps(datasets):
    data = datasets["layer24"]
    a = train_peft_run(spec("loha", "layer24"), data, CPU)
    b = train_peft_run(spec("loha", "layer24"), data, CPU)
    assert a.epochs == b.epochs
    c = train_peft_run(spec("loha", "layer24", lr=0.001), data, CPU)
    assert c.epochs[0] == a.epochs[0] and c.epochs[-1] != a.epochs[-1]


def test_adalora_allocates_rank_and_is_penalised(peft, datasets):
    data = datasets["layer24"]
    run = spec("adalora", "layer24", epochs=4,
               settings=json.dumps({"tinit": 2, "tfinal": 2, "deltaT": 1}))  # fmt: skip
    model = peft_trainer.wrap(run, data, CPU)
    assert model.peft_config["default"].init_r == 6
    assert model.peft_config["default"].total_step == 16
    assert float(peft_trainer.orthogonality_penalty(model)) > 0
    result = train_peft_run(run, data, CPU)
    kept = result.tensors["base_model.model.layer.lora_E"]
    assert result.status == "ok" and kept.shape[0] == 4, "the budget did not fall to target_r"


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_the_engine_matches_peft_from_the_same_start(peft, datasets, method):
    """The engine's LoRA (its fused objective) and DoRA, and PEFT's, started from the same
    adapter and fed the same mini-batches, agree within 1e-5 at every epoch."""
    from lorasweep.training.batched import train_cohort
    from lorasweep.training.loop import build_model

    data = datasets["layer24"]
    run = RunSpec(dataset="layer24", method=method, seed=0, lr=0.01, epochs=3, batch_size=32,
                  bias="none", device="cpu", rank=4, alpha=8.0, scaling="rslora",
                  init="gaussian")  # fmt: skip
    engine = train_cohort([run], data, CPU)[0]
    layer = build_model(run, data, CPU)
    prefix = peft_format.PREFIX
    start = {f"{prefix}lora_A.weight": layer.lora_A.detach(),
             f"{prefix}lora_B.weight": layer.lora_B.detach()}  # fmt: skip
    if method == "dora":
        start[peft_format.MAGNITUDE_KEY] = layer.magnitude.detach()
    result = train_peft_run(run, data, CPU, initial_state=start)
    assert len(engine.epochs) == len(result.epochs) == 4
    for ours, theirs in zip(engine.epochs, result.epochs, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
