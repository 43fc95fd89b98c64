"""The CUDA path: the batched Adam against ``torch.optim.Adam`` (which takes its foreach path on
CUDA, not the single-tensor arithmetic the batched Adam copies), the batched engine against the
single-run path on CUDA, and a small workflow run with ``device: cuda``. Skipped without CUDA;
``benchmarks/gpu.sh`` runs them on a lent GPU."""

import dataclasses
import shutil

import pytest
import torch
import yaml

from lorasweep.tasks import synthetic
from lorasweep.training.batched import train_cohort
from lorasweep.training.loop import train_run
from tests.conftest import CONFIGS, snakemake
from tests.test_batched import BATCHES, assert_same_run, stacked_and_torch_adam
from tests.test_batched_deep import NOISE_ONLY, deep_cohorts
from tests.test_deep import MLP, TRANSFORMER

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")


def on_cuda(dataset: synthetic.Dataset) -> synthetic.Dataset:
    return synthetic.Dataset(dataset.spec, {k: v.to(CUDA) for k, v in dataset.tensors.items()})


def cuda_specs(specs):
    return [dataclasses.replace(s, device="cuda") for s in specs]


def test_stacked_adam_follows_torch_adam_on_cuda():
    """On CUDA ``torch.optim.Adam`` defaults to ``foreach``, whose fused arithmetic rounds
    differently from the single-tensor path; the batched Adam must stay within float32 rounding
    of it over many steps."""
    params, references = stacked_and_torch_adam(CUDA, steps=200)
    for run, leaves in enumerate(references):
        for name, leaf in leaves.items():
            torch.testing.assert_close(params[name][run], leaf.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BATCHES, ids=list(BATCHES))
def test_batched_equals_single_on_cuda_single_layer(name):
    data = on_cuda(
        synthetic.generate(
            synthetic.DatasetSpec(name="d", kind="lowrank", in_features=16, out_features=12,
                                  n_train=256, n_val=64, noise_std=0.1, task_rank=2,
                                  task_scale=2.0, spectrum_decay=0.5)
        )
    )  # fmt: skip
    specs = cuda_specs(BATCHES[name])
    for batched, spec in zip(train_cohort(specs, data, CUDA), specs, strict=True):
        assert_same_run(batched, train_run(spec, data, CUDA))


DEEP = {"tf": TRANSFORMER, "net": MLP}
DEEP_CASES = [(name, case) for name in DEEP for case in deep_cohorts(name)]


@pytest.mark.parametrize(("name", "case"), DEEP_CASES, ids=[f"{n}-{c}" for n, c in DEEP_CASES])
def test_batched_equals_single_on_cuda_deep(name, case):
    entry = {**DEEP[name], "n_train": 48, "n_val": 16}
    data = on_cuda(synthetic.generate(synthetic.DatasetSpec.from_config(entry)))
    specs = cuda_specs(deep_cohorts(name)[case])
    for batched, spec in zip(train_cohort(specs, data, CUDA), specs, strict=True):
        assert_same_run(batched, train_run(spec, data, CUDA), noise_only=NOISE_ONLY)


@pytest.mark.integration
def test_workflow_trains_on_cuda(tmp_path):
    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / "cuda.yaml").write_text(yaml.safe_dump({"train": {"device": "cuda"}}))
    snakemake(tmp_path, "--cores", "2", "--configfile", "tiny.yaml", "cuda.yaml")
    runs = (tmp_path / "results" / "tables" / "runs.csv").read_text()
    assert ",cuda," in runs
