"""Bad input: a clear one-line error naming the key and what is allowed, before any job runs,
with every file under results/ left as it was."""

import shutil

import pytest
import yaml

from .conftest import CONFIGS, snakemake

pytestmark = pytest.mark.integration

TINY = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
DATASET = TINY["datasets"][0]


def dataset(**overrides):
    return {"datasets": [{**DATASET, **overrides}]}


CASES = {
    "rank zero": ({"grid": {"rank": [0]}}, "grid.rank[0]", "got 0; allowed: an integer >= 1"),
    "rank negative": ({"grid": {"rank": [4, -2]}}, "grid.rank[1]", "allowed: an integer >= 1"),
    "rank not integer": ({"grid": {"rank": [2.5]}}, "grid.rank[0]", "allowed: an integer"),
    "rank too large": ({"grid": {"rank": [13]}}, "grid.rank[0]", "allowed: 1..12 = min(in_features, out_features)"),
    "alpha zero": ({"grid": {"alpha": [0]}}, "grid.alpha[0]", "allowed: a number > 0"),
    "lr negative": ({"grid": {"lr": [-0.01]}}, "grid.lr[0]", "allowed: a number > 0"),
    "full lr zero": ({"full_finetune": {"lr": [0]}}, "full_finetune.lr[0]", "allowed: a number > 0"),
    "epochs zero": ({"train": {"epochs": 0}}, "train.epochs", "allowed: an integer >= 1"),
    "batch size zero": ({"train": {"batch_size": 0}}, "train.batch_size", "an integer >= 1 or null"),
    "n_train zero": (dataset(n_train=0), "datasets[0].n_train", "allowed: an integer >= 1"),
    "noise negative": (dataset(noise_std=-0.5), "datasets[0].noise_std", "allowed: a number >= 0"),
    "unknown scaling": ({"grid": {"scaling": ["alpha_r"]}}, "grid.scaling[0]", "standard, rslora, constant"),
    "unknown init": ({"grid": {"init": ["zeros"]}}, "grid.init[0]", "kaiming, gaussian, pissa, randn"),
    "unknown kind": (dataset(kind="images"), "datasets[0].kind", "lowrank, noise"),
    "unknown device": ({"train": {"device": "tpu"}}, "train.device", "auto, cpu, cuda"),
    "unknown bias": ({"train": {"bias": "lora_only"}}, "train.bias", "none, all"),
    "unknown engine": ({"train": {"engine": "fast"}}, "train.engine", "batched, single"),
    "memory budget zero": ({"train": {"memory_budget_mib": 0}}, "train.memory_budget_mib", "a number > 0 or null"),
    "empty grid list": ({"grid": {"alpha": []}}, "grid.alpha", "must not be empty"),
    "duplicate dataset": ({"datasets": [DATASET, DATASET]}, "datasets", "'tiny' is given 2 times"),
    "task rank too large": (dataset(task_rank=13), "datasets[0].task_rank", "allowed: 1..12"),
    "unknown top-level key": ({"seed": [1]}, "seed", "likely a typo of 'seeds'"),
    "unknown nested key": ({"train": {"epoch": 3}}, "train.epoch", "likely a typo of 'epochs'"),
    "path in dataset name": (dataset(name="../../etc"), "datasets[0].name", "letters, digits"),
    "absolute results folder": ({"results": "/tmp/elsewhere"}, "results", "relative path"),
}  # fmt: skip


@pytest.fixture(scope="module")
def computed(tiny_run, tmp_path_factory):
    """A working folder holding the results of a finished run of the tiny config."""
    workdir = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(tiny_run / "results", workdir / "results")
    shutil.copy(CONFIGS / "tiny.yaml", workdir / "tiny.yaml")
    return workdir


def snapshot(workdir):
    return {
        p.relative_to(workdir): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted((workdir / "results").rglob("*"))
        if p.is_file()
    }


def assert_rejected(workdir, *configfiles, key_message):
    before = snapshot(workdir)
    result = snakemake(workdir, "--cores", "1", "--configfile", *configfiles, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if key_message in line]
    assert lines, result.stderr[-3000:]
    assert snapshot(workdir) == before, "results/ changed"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_config_is_rejected_before_any_job(computed, case):
    override, key, allowed = CASES[case]
    (computed / "bad.yaml").write_text(yaml.safe_dump(override))
    line = assert_rejected(computed, "tiny.yaml", "bad.yaml", key_message=f"config error: {key}:")
    assert allowed in line


def test_config_that_is_not_yaml_is_rejected(computed):
    (computed / "broken.yaml").write_text("grid: [unclosed\n  rank: 3\n")
    assert_rejected(computed, "tiny.yaml", "broken.yaml", key_message="not valid JSON or YAML")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_dataset_file_is_detected_before_any_job(computed, damage):
    path = computed / "results" / "datasets" / "tiny.safetensors"
    original = path.read_bytes()
    try:
        if damage == "truncate":
            path.write_bytes(original[: len(original) // 3])
        else:
            flipped = bytearray(original)
            flipped[len(flipped) // 2] ^= 0x01
            path.write_bytes(bytes(flipped))
        line = assert_rejected(computed, "tiny.yaml", key_message="checksum mismatch")
        assert "tiny.safetensors" in line and "truncated or corrupted" in line
    finally:
        path.write_bytes(original)
