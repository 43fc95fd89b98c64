"""The method, init and scaling registries: torch-free, the schema's enums, the only place a
name is compared."""

from __future__ import annotations

import ast
import math
import subprocess
import sys

import pytest
import yaml

from lorasweep import options
from lorasweep.config import SCHEMA_PATH
from lorasweep.models import registry

from .conftest import REPO

NAMES = {r.name for r in (*registry.METHOD_RECORDS, *registry.INIT_RECORDS)} | {
    r.name for r in registry.SCALING_RECORDS
}
SOURCE = REPO / "src" / "lorasweep"
REGISTRY = SOURCE / "models" / "registry.py"


def test_importing_the_registry_imports_no_torch():
    code = (
        "import sys, lorasweep.models.registry, lorasweep.options, lorasweep.models.scaling; "
        "sys.exit('torch' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_the_registries():
    assert tuple(m.name for m in registry.METHOD_RECORDS) == options.METHODS
    assert tuple(i.name for i in registry.INIT_RECORDS) == options.INITS
    assert tuple(s.name for s in registry.SCALING_RECORDS) == options.SCALINGS
    assert set(options.GRID_METHODS) == {m.name for m in registry.METHOD_RECORDS if m.adapter}


def test_schema_enums_are_the_registries():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    defs = schema["$defs"]
    assert defs["scalings"]["items"]["enum"] == list(options.SCALINGS)
    assert defs["inits"]["items"]["enum"] == list(options.INITS)
    assert defs["methods"]["items"]["enum"] == list(options.GRID_METHODS)
    assert defs["method_lrs"]["propertyNames"]["enum"] == list(options.GRID_METHODS)
    settings = schema["properties"]["method_settings"]
    assert settings["propertyNames"]["enum"] == list(options.PEFT_METHODS)


def test_every_init_has_code_and_every_rule_its_formula():
    pytest.importorskip("torch")
    from lorasweep.models.lora import INITIALISERS

    assert set(INITIALISERS) == set(options.INITS)
    assert registry.scaling("standard").factor(8, 4) == 2.0
    assert registry.scaling("rslora").factor(8, 4) == 8 / math.sqrt(4)
    assert registry.scaling("constant").factor(8, 4) == 8.0


def test_unknown_names_are_refused_with_the_allowed_ones():
    with pytest.raises(
        ValueError, match="unknown method 'bone'; allowed: lora, full, dora, adalora"
    ):
        registry.method("bone")
    with pytest.raises(ValueError, match="allowed: kaiming, gaussian, pissa, randn"):
        registry.init("olora")


def _compared_names(node: ast.AST) -> list[str]:
    sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
    found = []
    for side in sides:
        elements = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
        found += [e.value for e in elements if isinstance(e, ast.Constant) and e.value in NAMES]
    return found


def scan(path, root=REPO) -> list[str]:
    """Every comparison in ``path`` with a registered name as a string literal."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno}: {name!r}"
        for node in ast.walk(tree)
        for name in _compared_names(node)
    ]


def test_the_scan_finds_a_comparison(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("ok = spec.init == 'pissa' or rule in ('standard', 'x') or m != 'lora'\n")
    found = [line.rsplit(": ", 1)[1] for line in scan(source, tmp_path)]
    assert sorted(found) == ["'lora'", "'pissa'", "'standard'"]


def test_no_module_compares_a_method_init_or_rule_by_name():
    paths = [p for p in sorted(SOURCE.rglob("*.py")) if p != REGISTRY]
    assert [line for path in paths for line in scan(path)] == []


def test_every_adapter_method_has_a_layer_class_and_dora_never_caches_the_base():
    torch = pytest.importorskip("torch")
    from lorasweep.models.adapters import LAYERS
    from lorasweep.models.dora import DoRALinear
    from lorasweep.models.lora import LoRALinear
    from lorasweep.training.exact import can_cache_base, trains_on_base_residuals

    assert set(LAYERS) == set(options.GRID_METHODS) - set(options.PEFT_METHODS)
    assert all(cls.method_record.name == name for name, cls in LAYERS.items())
    assert not issubclass(DoRALinear, LoRALinear)
    gen = torch.Generator().manual_seed(0)
    assert can_cache_base(LoRALinear(torch.nn.Linear(6, 5), 2, generator=gen))
    assert not can_cache_base(DoRALinear(torch.nn.Linear(6, 5), 2, generator=gen))
    from lorasweep.planning.runs import RunSpec

    run = RunSpec("d", "dora", 0, 0.01, 1, None, "none", "cpu", 2, 4.0, "standard", "kaiming")
    assert not trains_on_base_residuals(run)
    from lorasweep.models.accounting import count_parameters

    for name, cls in LAYERS.items():
        layer = cls(torch.nn.Linear(16, 12), 4, bias="lora_only", generator=gen)
        counts = count_parameters(layer)
        assert counts.trainable == registry.method(name).trained_parameters(16, 12, 4, bias=True)
        assert counts.adapter == counts.trainable - 12


def test_method_records_count_their_parameters_and_name_their_learning_rates():
    lora, dora, full = (registry.method(m) for m in ("lora", "dora", "full"))
    assert lora.trained_parameters(16, 12, 4, bias=False) == 4 * 28
    assert dora.trained_parameters(16, 12, 4, bias=True) == 4 * 28 + 12 + 12
    assert full.trained_parameters(16, 12, None, bias=True) == 16 * 12 + 12
    assert dora.lr_groups(0.01, 4.0) == {
        "lora_A": 0.01, "lora_B": 0.04, "magnitude": 0.01, "bias": 0.01
    }  # fmt: skip
    assert (lora.additive, dora.additive, full.additive) == (True, False, False)
