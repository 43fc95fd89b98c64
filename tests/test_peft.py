"""Every LoRA run's peft/ folder loads in PEFT 0.21.2 and computes what the run's own model
computes; adapters PEFT saves load into this package's LoRALinear and evaluate the same."""

import itertools
import json
import logging
import subprocess
import sys
import warnings

import pytest
import torch

from lorasweep.io import load_tensors
from lorasweep.jobs.run_folder import write_run
from lorasweep.models import peft_format, registry
from lorasweep.models.dora import DoRALinear
from lorasweep.models.lora import lora_layers
from lorasweep.options import BIASES, ENGINE_METHODS, INITS, SCALINGS
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import storage, synthetic
from lorasweep.training.loop import build_model, train_run

from .conftest import REPO, required_in_ci

pytestmark = pytest.mark.peft

CPU = torch.device("cpu")
SPEC = synthetic.DatasetSpec(
    name="peftdata", kind="lowrank", in_features=24, out_features=16, n_train=256, n_val=64,
    noise_std=0.1, task_rank=3, task_scale=2.0, spectrum_decay=0.5, seed=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def peft():
    try:
        import peft
    except ImportError:
        required_in_ci("LORASWEEP_REQUIRE_PEFT", "PEFT is not installed (pip install -e '.[dev]')")
    assert peft.__version__ == peft_format.PEFT_VERSION
    return peft


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    tensors, meta = folder / "peftdata.safetensors", folder / "peftdata.json"
    storage.save(synthetic.generate(SPEC), tensors, meta)
    return tensors


@pytest.fixture(scope="module")
def dataset(dataset_file):
    return storage.load(dataset_file, dataset_file.with_suffix(".json"))


def lora(**overrides) -> RunSpec:
    settings = dict(dataset="peftdata", method="lora", seed=0, lr=0.01, epochs=3, batch_size=64,
                    bias="none", device="cpu", rank=4, alpha=8.0, scaling="standard",
                    init="kaiming")  # fmt: skip
    return RunSpec(**{**settings, **overrides})


def trained_run(spec, dataset, tmp_path):
    run_dir = tmp_path / spec.run_id
    write_run(run_dir, train_run(spec, dataset, CPU), None, {})
    return run_dir


def own_model(spec, dataset, run_dir):
    """The run's own model: its base as training built it, with the trained tensors."""
    model = build_model(spec, dataset, CPU)
    trained = load_tensors(run_dir / "weights.safetensors")
    with torch.no_grad():
        model.lora_A.copy_(trained["lora_A"])
        model.lora_B.copy_(trained["lora_B"])
        if "magnitude" in trained:
            model.magnitude.copy_(trained["magnitude"])
        if "bias" in trained:
            model.base.bias.copy_(trained["bias"])
    return model.eval()


def quietly(load):
    """Call ``load()`` and fail on any warning, from ``warnings`` or from logging."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = load()
    finally:
        root.removeHandler(handler)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in records]
    assert not messages, messages
    return result


def from_pretrained(peft, folder, base):
    return quietly(lambda: peft.PeftModel.from_pretrained(base, folder)).eval()


def test_constant_scale_is_written_as_alpha_times_rank():
    assert peft_format.peft_scaling("constant", 1.0, 4) == (4.0, False)
    assert peft_format.peft_scaling("constant", 2.5, 16) == (40.0, False)
    assert peft_format.peft_scaling("standard", 8, 4) == (8.0, False)
    assert peft_format.peft_scaling("rslora", 8, 4) == (8.0, True)


def test_writing_the_folder_needs_no_peft(tmp_path):
    code = (
        "import sys; sys.modules['peft'] = None; sys.modules['transformers'] = None\n"
        "import torch\n"
        "from lorasweep.models.peft_format import write_adapter\n"
        "from lorasweep.planning.runs import RunSpec\n"
        "spec = RunSpec('d', 'lora', 0, 0.01, 1, None, 'lora_only', 'cpu', 2, 4.0, 'constant',"
        " 'randn')\n"
        "t = {'lora_A': torch.ones(2, 3), 'lora_B': torch.ones(5, 2), 'bias': torch.zeros(5)}\n"
        f"write_adapter({str(tmp_path / 'peft')!r}, spec, t)\n"
        "assert 'peft' not in sys.modules or sys.modules['peft'] is None\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (config["lora_alpha"], config["use_rslora"], config["bias"]) == (8.0, False, "lora_only")


@pytest.mark.parametrize("scaling", SCALINGS)
def test_config_is_what_peft_writes_for_the_same_settings(peft, dataset, tmp_path, scaling):
    spec = lora(scaling=scaling, bias="lora_only", dropout=0.1, init="gaussian")
    folder = trained_run(spec, dataset, tmp_path) / "peft"
    ours = json.loads((folder / "adapter_config.json").read_text())
    assert ours["base_model_name_or_path"] is None and ours["peft_type"] == "LORA"
    loaded = quietly(lambda: peft.LoraConfig.from_pretrained(folder))
    lora_alpha, use_rslora = peft_format.peft_scaling(scaling, spec.alpha, spec.rank)
    theirs = peft.LoraConfig(
        r=spec.rank, lora_alpha=lora_alpha, use_rslora=use_rslora, target_modules=["layer"],
        bias="lora_only", lora_dropout=0.1, init_lora_weights="gaussian", inference_mode=True,
    ).to_dict()  # fmt: skip
    for key, value in ours.items():
        got = getattr(loaded, key)
        got = sorted(got) if isinstance(got, set) else got
        assert got == value == (sorted(theirs[key]) if key == "target_modules" else theirs[key])


@pytest.mark.parametrize(
    ("method", "scaling", "init", "bias"),
    list(
        itertools.product(
            [m for m in ENGINE_METHODS if registry.is_adapter(m)], SCALINGS, INITS, BIASES
        )
    ),
)
def test_peft_loads_each_run_and_computes_the_same_outputs(
    peft, dataset, dataset_file, tmp_path, method, scaling, init, bias
):
    """Every adapter method's folder (DoRA's with ``use_dora: true`` and its magnitude) loads
    in PEFT without a warning, computes the run's outputs and its final validation loss."""
    spec = lora(
        method=method, scaling=scaling, init=init, bias=bias, alpha=4.0 if init == "randn" else 8.0
    )
    run_dir = trained_run(spec, dataset, tmp_path)
    folder = run_dir / "peft"
    expected = {"adapter_config.json", "adapter_model.safetensors"}
    assert {p.name for p in folder.iterdir()} == expected | (
        {"base_layer.safetensors"} if init == "pissa" else set()
    )
    model = own_model(spec, dataset, run_dir)
    peft_model = from_pretrained(peft, folder, peft_format.base_module(dataset_file, folder))
    layer = peft_model.base_model.model.layer
    assert layer.scaling["default"] == pytest.approx(model.scaling, rel=1e-12)
    with torch.no_grad():
        x = dataset["X_val"]
        # DoRA rescales each row by m/‖·‖ in float32: outputs near 100 differ by an ulp
        rtol = 1e-6 if method == "dora" else 0
        torch.testing.assert_close(peft_model(x), model(x), rtol=rtol, atol=1e-5)
        moved = (model(x) - dataset["X_val"] @ dataset["W0"].T - dataset["b0"]).abs().max()
        val_loss = torch.nn.functional.mse_loss(peft_model(x), dataset["y_val"]).item()
    assert moved > 1e-3, "the trained adapter should change the output"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert val_loss == pytest.approx(metrics["final_val_loss"], rel=1e-4)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config.get("use_dora", False) == (method == "dora")
    assert hasattr(layer, "lora_magnitude_vector") and bool(layer.lora_magnitude_vector) == (
        method == "dora"
    )


def _peft_dora(peft, base, targets, spec, ours, prefix):
    """PEFT's ``use_dora=True`` model on ``base`` with our adapters' A, B and m copied in."""
    lora_alpha, use_rslora = peft_format.peft_scaling(spec.scaling, spec.alpha, spec.rank)
    config = peft.LoraConfig(
        r=spec.rank, lora_alpha=lora_alpha, use_rslora=use_rslora, target_modules=targets,
        use_dora=True, bias=spec.bias,
    )  # fmt: skip
    model = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name in targets:
            theirs = model.base_model.model.get_submodule(name)
            mine = ours.get_submodule(name) if name != prefix else ours
            theirs.lora_A["default"].weight.copy_(mine.lora_A)
            theirs.lora_B["default"].weight.copy_(mine.lora_B)
            theirs.lora_magnitude_vector["default"].weight.copy_(mine.magnitude)
    return model


def _perturb(model):
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))


def _assert_same_dora(peft_model, ours, targets, prefix, x, y):
    """Outputs and the gradients of the MSE with respect to every A, B and m within 1e-5."""
    torch.testing.assert_close(peft_model(x), ours(x), rtol=1e-5, atol=1e-5)
    torch.nn.functional.mse_loss(peft_model(x), y).backward()
    torch.nn.functional.mse_loss(ours(x), y).backward()
    for name in targets:
        theirs = peft_model.base_model.model.get_submodule(name)
        mine = ours.get_submodule(name) if name != prefix else ours
        pairs = [(theirs.lora_A["default"].weight, mine.lora_A),
                 (theirs.lora_B["default"].weight, mine.lora_B),
                 (theirs.lora_magnitude_vector["default"].weight, mine.magnitude)]  # fmt: skip
        for their, my in pairs:
            assert my.grad is not None and my.grad.abs().max() > 0
            torch.testing.assert_close(their.grad, my.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("init", "bias"), [("kaiming", "none"), ("randn", "lora_only")])
def test_dora_forward_and_gradients_equal_peft_on_a_single_layer(
    peft, dataset, dataset_file, init, bias
):
    spec = lora(method="dora", init=init, bias=bias, scaling="rslora")
    ours = build_model(spec, dataset, CPU)
    assert isinstance(ours, DoRALinear)
    x, y = dataset["X_train"][:32], dataset["y_train"][:32]
    if registry.init(init).zero_start:
        with torch.no_grad():
            torch.testing.assert_close(ours(x), x @ dataset["W0"].T + dataset["b0"])
    _perturb(ours)
    base = peft_format.base_module(dataset_file)
    peft_model = _peft_dora(peft, base, ["layer"], spec, ours, "layer")
    if bias == "lora_only":
        with torch.no_grad():
            peft_model.base_model.model.layer.base_layer.bias.copy_(ours.base.bias)
    _assert_same_dora(peft_model, ours, ["layer"], "layer", x, y)


def test_dora_forward_and_gradients_equal_peft_on_the_transformer(peft):
    from lorasweep.models import networks
    from tests.test_deep import TRANSFORMER

    data = synthetic.generate(synthetic.DatasetSpec.from_config(TRANSFORMER))
    spec = RunSpec(dataset="tf", method="dora", seed=0, lr=0.01, epochs=1, batch_size=16,
                   bias="none", device="cpu", rank=2, alpha=4.0, scaling="standard",
                   init="kaiming", targets="all")  # fmt: skip
    ours = build_model(spec, data, CPU)
    targets = [name for name, _ in lora_layers(ours)]
    assert targets and all(isinstance(m, DoRALinear) for _, m in lora_layers(ours))
    x, y = data["X_train"][:8], data["y_train"][:8]
    base = networks.load_base(data, CPU)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), base(x), rtol=1e-6, atol=1e-6)
    _perturb(ours)
    peft_model = _peft_dora(peft, base, targets, spec, ours, None)
    _assert_same_dora(peft_model, ours, targets, None, x, y)


def test_run_adapter_evaluates_to_the_runs_own_losses(dataset, dataset_file, tmp_path):
    for spec in (
        lora(),
        lora(init="pissa", bias="lora_only", scaling="rslora"),
        lora(init="randn"),
    ):
        run_dir = trained_run(spec, dataset, tmp_path)
        losses = peft_format.evaluate_adapter(run_dir / "peft", dataset_file)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert losses["val"] == pytest.approx(metrics["final_val_loss"], rel=1e-5)


def test_peft_initialises_as_the_config_says(peft, dataset, tmp_path):
    """The inits PEFT can express: kaiming (B = 0, A ~ U(±1/√d_in)), gaussian (B = 0,
    A ~ N(0, 1/r²)), and PiSSA, whose residual and product s·BA PEFT computes as we do."""
    w0 = dataset["W0"]
    for init in ("kaiming", "gaussian", "pissa"):
        spec = lora(init=init, rank=8)
        folder = trained_run(spec, dataset, tmp_path) / "peft"
        config = json.loads((folder / "adapter_config.json").read_text())
        fresh = peft.LoraConfig(**{**config, "inference_mode": False})
        if init == "pissa":
            fresh.init_lora_weights = "pissa"
        torch.manual_seed(0)
        layer = peft.get_peft_model(peft_format.base_module(dataset), fresh).base_model.model.layer
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        ours = build_model(spec, dataset, CPU)
        if init == "pissa":
            s = layer.scaling["default"]
            torch.testing.assert_close(s * b @ a, ours.delta_weight(), rtol=0, atol=1e-5)
            residual = layer.base_layer.weight
            torch.testing.assert_close(residual, ours.base.weight, rtol=0, atol=1e-5)
            torch.testing.assert_close(residual + s * b @ a, w0, rtol=0, atol=1e-5)
            continue
        assert not b.any() and not ours.lora_B.any()
        if init == "kaiming":
            bound = 1 / SPEC.in_features**0.5
            assert a.abs().max() <= bound and ours.lora_A.abs().max() <= bound
        else:
            assert a.std().item() == pytest.approx(1 / 8, rel=0.25)
            assert ours.lora_A.std().item() == pytest.approx(1 / 8, rel=0.25)


@pytest.mark.parametrize(
    ("use_rslora", "bias", "init"),
    [(False, "none", True), (True, "all", "gaussian"), (False, "lora_only", True),
     (True, "none", "pissa"), (False, "all", "pissa")],
)  # fmt: skip
def test_a_peft_saved_adapter_is_evaluated_by_the_pipeline(
    peft, dataset, dataset_file, tmp_path, use_rslora, bias, init
):
    """PEFT saves a PiSSA adapter without its residual; PEFT and this package both re-derive
    it from W₀ on loading (PEFT's SVD in float32, ours in float64, hence rtol 1e-5)."""
    config = peft.LoraConfig(
        r=4, lora_alpha=6, use_rslora=use_rslora, bias=bias, target_modules=["layer"],
        init_lora_weights=init,
    )  # fmt: skip
    torch.manual_seed(1)
    model = peft.get_peft_model(peft_format.base_module(dataset_file), config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=gen))
    quietly(lambda: model.save_pretrained(tmp_path / "saved"))
    reloaded = from_pretrained(peft, tmp_path / "saved", peft_format.base_module(dataset_file))
    ours = peft_format.load_adapter(tmp_path / "saved", dataset_file)
    assert ours.scaling == pytest.approx(model.base_model.model.layer.scaling["default"])
    losses = peft_format.evaluate_adapter(tmp_path / "saved", dataset_file)
    with torch.no_grad():
        for split in ("train", "val"):
            x, y = dataset[f"X_{split}"], dataset[f"y_{split}"]
            torch.testing.assert_close(ours(x), model.eval()(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=1e-5)
            mse = torch.nn.functional.mse_loss(model(x), y).item()
            assert losses[split] == pytest.approx(mse, rel=1e-5)


def test_unsupported_adapters_are_refused_by_name(peft, dataset_file, tmp_path):
    config = peft.LoraConfig(r=2, target_modules=["layer"], lora_bias=True)
    peft.get_peft_model(peft_format.base_module(dataset_file), config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="lora_bias True"):
        peft_format.load_adapter(tmp_path, dataset_file)


def test_folder_bytes_are_reproducible(dataset, tmp_path):
    spec = lora(init="pissa", bias="lora_only")
    result = train_run(spec, dataset, CPU)
    for name in ("a", "b"):
        write_run(tmp_path / name, result, None, {})
    for file in ("adapter_config.json", "adapter_model.safetensors", "base_layer.safetensors"):
        assert (tmp_path / "a" / "peft" / file).read_bytes() == (
            tmp_path / "b" / "peft" / file
        ).read_bytes()
