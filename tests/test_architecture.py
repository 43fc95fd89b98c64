"""The one torch-free description of each architecture (models/architecture.py) against the
models training builds, and that planning reads it without importing torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lorasweep.models.architecture import describe, linear_modules
from lorasweep.models.networks import build_network, linear_names
from lorasweep.planning.resources import network_slot_elements
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.synthetic import DatasetSpec

REPO = Path(__file__).resolve().parents[1]

TRANSFORMERS = [
    {"d_model": 8, "n_heads": 2, "n_layers": 1, "seq_len": 4, "d_ff": 16},
    {"d_model": 12, "n_heads": 3, "n_layers": 3, "seq_len": 2, "d_ff": 20},
    {"d_model": 4, "n_heads": 1, "n_layers": 2, "seq_len": 1, "d_ff": 4},
]
MLPS = [
    {"in_features": 6, "out_features": 4, "d_model": 8, "n_layers": 3},
    {"in_features": 5, "out_features": 7, "d_model": 3, "n_layers": 1},
    {"in_features": 2, "out_features": 2, "d_model": 9, "n_layers": 2},
]
LAYERS = [{"in_features": 6, "out_features": 4}, {"in_features": 1, "out_features": 9}]


def entry(kind: str, sizes: dict) -> dict:
    return {"name": "d", "kind": kind, "n_train": 8, "n_val": 4, "noise_std": 0.1,
            "task_rank": 1, "in_features": 0, "out_features": 0, **sizes}  # fmt: skip


DEEP = [("transformer", s) for s in TRANSFORMERS] + [("mlp", s) for s in MLPS]


@pytest.mark.parametrize(("kind", "sizes"), DEEP, ids=lambda v: str(v))
def test_every_network_has_the_described_parameters(kind, sizes):
    spec = DatasetSpec.from_config(entry(kind, sizes))
    network = build_network(spec, device="meta")
    built = [(name, tuple(p.shape)) for name, p in network.named_parameters()]
    architecture = describe(spec.as_dict())
    assert built == list(architecture.parameters)
    assert [m.name for m in architecture.linears] == linear_names(network)
    assert architecture.parameter_count() == sum(p.numel() for p in network.parameters())
    assert linear_modules(spec.as_dict()) == list(architecture.linears)


@pytest.mark.parametrize("kind", ["lowrank", "noise"])
@pytest.mark.parametrize("sizes", LAYERS, ids=lambda v: str(v))
def test_a_single_layer_is_the_described_linear(kind, sizes):
    spec = DatasetSpec.from_config(entry(kind, sizes))
    layer = torch.nn.Linear(spec.in_features, spec.out_features, device="meta")
    built = [(name, tuple(p.shape)) for name, p in layer.named_parameters()]
    assert built == list(describe(spec.as_dict()).parameters)
    assert linear_modules(spec.as_dict()) == [], "the single-layer kinds have no named modules"


@pytest.mark.parametrize(("kind", "sizes"), DEEP, ids=lambda v: str(v))
def test_a_full_fine_tuning_slot_holds_every_parameter(kind, sizes):
    """The planner's slot length for full fine-tuning counts each described parameter once,
    each aligned to 64 elements."""
    dataset = DatasetSpec.from_config(entry(kind, sizes)).as_dict()
    network = build_network(DatasetSpec.from_config(dataset), device="meta")
    run = RunSpec(dataset="d", method="full", seed=0, lr=0.01, epochs=1, batch_size=None,
                  bias="none", device="cpu")  # fmt: skip
    expected = sum(-(-p.numel() // 64) * 64 for p in network.parameters())
    assert network_slot_elements(run, dataset) == expected


def test_the_description_and_planning_import_no_torch():
    modules = ("lorasweep.models.architecture, lorasweep.models.names, "
               "lorasweep.planning.resources, lorasweep.planning.cohorts, "
               "lorasweep.planning.grouping")  # fmt: skip
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert result.returncode == 0, result.stderr
