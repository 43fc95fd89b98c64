"""Bad input: a clear one-line error naming the key and what is allowed, before any job runs,
with every file under results/ left as it was.

Every config case is checked through ``lorasweep.config.validated()`` as the workflow calls it,
on tiny.yaml with the case merged over it as Snakemake merges a second ``--configfile``; a few
cases also go through Snakemake end to end, for "one line, before any job, results/ untouched".
"""

import copy
import math
import os
import shutil

import pytest
import yaml
from snakemake.utils import update_config

from lorasweep.config import ConfigError, validated

from .conftest import CONFIGS, snakemake
from .test_config import integers_as_floats, readme_config_examples, with_overrides

TINY = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
DATASET = TINY["datasets"][0]


def dataset(**overrides):
    return {"datasets": [{**DATASET, **overrides}]}


TRANSFORMER = dict(name="tf", kind="transformer", d_model=8, n_heads=2, n_layers=1, seq_len=4,
                   d_ff=16, shifted="mlp", task_rank=1, noise_std=0.1, n_train=64, n_val=16)  # fmt: skip


def transformer(targets=("mlp",), **overrides):
    return {"datasets": [{**TRANSFORMER, **overrides}], "grid": {"targets": list(targets)}}


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
    "unknown bias": ({"train": {"bias": "both"}}, "train.bias", "none, lora_only, all"),
    "unknown engine": ({"train": {"engine": "fast"}}, "train.engine", "batched, single"),
    "memory budget zero": ({"train": {"memory_budget_mib": 0}}, "train.memory_budget_mib", "a number > 0 or null"),
    "empty grid list": ({"grid": {"alpha": []}}, "grid.alpha", "must not be empty"),
    "duplicate dataset": ({"datasets": [DATASET, DATASET]}, "datasets", "'tiny' is given 2 times"),
    "task rank too large": (dataset(task_rank=13), "datasets[0].task_rank", "allowed: 1..12"),
    "unknown top-level key": ({"seed": [1]}, "seed", "likely a typo of 'seeds'"),
    "unknown nested key": ({"train": {"epoch": 3}}, "train.epoch", "likely a typo of 'epochs'"),
    "path in dataset name": (dataset(name="../../etc"), "datasets[0].name", "letters, digits"),
    "absolute results folder": ({"results": "/tmp/elsewhere"}, "results", "relative path"),
    "results folder ends in newline": ({"results": "out\n"}, "results", "relative path"),
    "results folder is a file": ({"results": "tiny.yaml"}, "results", "'tiny.yaml' is an existing file"),
    "results folder inside a file": ({"results": "tiny.yaml/out"}, "results", "existing file"),
    "dataset name ends in newline": (dataset(name="tiny\n"), "datasets[0].name", "letters, digits"),
    "dataset name too long": (dataset(name="t" * 65), "datasets[0].name", "1 to 64 letters"),
    "dataset name periodic": (dataset(name="t" * 24), "datasets[0].name", "20 or more repeats"),
    "tolerance nan": ({"report": {"tolerance": math.nan}}, "report.tolerance", "a finite number > 0"),
    "tolerance inf": ({"report": {"tolerance": math.inf}}, "report.tolerance", "a finite number > 0"),
    "dropout nan": ({"train": {"lora_dropout": math.nan}}, "train.lora_dropout", "a finite number"),
    "noise inf": (dataset(noise_std=math.inf), "datasets[0].noise_std", "a finite number >= 0"),
    "decay nan": (dataset(spectrum_decay=math.nan), "datasets[0].spectrum_decay", "a finite number"),
    "task scale inf": (dataset(task_scale=math.inf), "datasets[0].task_scale", "a finite number > 0"),
    "alpha inf": ({"grid": {"alpha": [2, math.inf]}}, "grid.alpha[1]", "a finite number > 0"),
    "lr nan": ({"grid": {"lr": [math.nan]}}, "grid.lr[0]", "a finite number > 0"),
    "full lr inf": ({"full_finetune": {"lr": [math.inf]}}, "full_finetune.lr[0]", "a finite number"),
    "seed too large": ({"seeds": [0, 2**63]}, "seeds[1]", "<= 9223372036854775807"),
    "data seed too large": (dataset(seed=2**64), "datasets[0].seed", "<= 9223372036854775807"),
    "rank text": ({"grid": {"rank": ["two"]}}, "grid.rank[0]", "got 'two'; allowed: an integer"),
    "memory of in_features": (dataset(in_features=10**9), "datasets[0].in_features", "GiB of memory"),
    "memory of n_train": (dataset(n_train=10**13), "datasets[0].n_train", "GiB of memory"),
    "work of epochs": ({"train": {"epochs": 10**7}}, "train.epochs", "multiply-adds"),
    "memory limit": ({**dataset(in_features=10**6), "limits": {"memory_gib": 2}}, "datasets[0].in_features", "at most 2.0 GiB (limits.memory_gib)"),
    "work limit": ({"limits": {"multiply_adds": 1e6}}, "train.epochs", "limits.multiply_adds"),
    "memory limit nan": ({"limits": {"memory_gib": math.nan}}, "limits.memory_gib", "finite"),
    "heads do not divide d_model": (transformer(n_heads=3), "datasets[0].n_heads", "allowed: a divisor of d_model = 8"),
    "shifted matches no module": (transformer(shifted="attn"), "datasets[0].shifted", "which matches no module"),
    "targets match no module": (transformer(targets=["mlp", "ffn"]), "grid.targets[1]", "'ffn', which matches no module"),
    "task rank too large for a shifted module": (transformer(task_rank=9), "datasets[0].task_rank", "allowed: 1..8 = the narrowest shifted module"),
    "targets on a single layer": ({"grid": {"targets": ["all"]}}, "grid.targets", "allowed only where the block has an mlp or transformer"),
    "width zero": (transformer(d_model=0), "datasets[0].d_model", "allowed: an integer >= 1"),
}  # fmt: skip

SNAKEMAKE_NOTE = "is extended by additional config specified via the command line"
"""Snakemake's own line on every run given a --configfile or --config, error or not."""


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


def assert_rejected(workdir, *configfiles, key_message, config=(), one_line=True):
    """Snakemake fails, with ``key_message`` on stderr and results/ unchanged; with
    ``one_line``, that line is all it prints besides its note on merged config files."""
    before = snapshot(workdir)
    args = ["--configfile", *configfiles, *(["--config", *config] if config else [])]
    result = snakemake(workdir, "--cores", "1", *args, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if key_message in line]
    assert lines, result.stderr[-3000:]
    assert snapshot(workdir) == before, "results/ changed"
    if one_line:
        assert "Traceback" not in result.stderr
        printed = [line for line in result.stderr.splitlines() if SNAKEMAKE_NOTE not in line]
        assert printed == lines[:1], result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_config_is_one_line_naming_the_key(tmp_path, monkeypatch, case):
    override, key, allowed = CASES[case]
    monkeypatch.chdir(tmp_path)
    shutil.copy(CONFIGS / "tiny.yaml", "tiny.yaml")
    config = copy.deepcopy(TINY)
    update_config(config, copy.deepcopy(override))
    with pytest.raises(ConfigError) as caught:
        validated(config)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config error: {key}: "), message
    assert allowed in message, message


END_TO_END = ["rank zero", "results folder is a file", "work of epochs"]
"""A schema error, a cross-key check and a resource estimate, through Snakemake."""


@pytest.mark.integration
@pytest.mark.parametrize("case", END_TO_END)
def test_bad_config_is_rejected_before_any_job(computed, case):
    override, key, allowed = CASES[case]
    (computed / "bad.yaml").write_text(yaml.safe_dump(override))
    line = assert_rejected(computed, "tiny.yaml", "bad.yaml", key_message=f"config error: {key}:")
    assert allowed in line


COMMAND_LINE = [
    (["reuse_runs=maybe"], "reuse_runs", "got 'maybe'; allowed: true or false"),
    (["grid={rank: [1, 2.5]}"], "grid.rank[1]", "got 2.5; allowed: an integer >= 1"),
    (["report={tolerance: .nan}"], "report.tolerance", "got nan; allowed: a finite number"),
    (["train={epochs: 1e7}"], "train.epochs", "multiply-adds"),
]


@pytest.mark.parametrize(("entries", "key", "allowed"), COMMAND_LINE)
def test_bad_command_line_config_names_the_key(entries, key, allowed):
    with pytest.raises(ConfigError) as caught:
        validated(with_overrides(*entries))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config error: {key}: "), message
    assert allowed in message, message


@pytest.mark.integration
def test_bad_command_line_config_is_one_line(computed):
    entries, key, allowed = COMMAND_LINE[1]
    line = assert_rejected(
        computed, "tiny.yaml", config=entries, key_message=f"config error: {key}:"
    )
    assert allowed in line


@pytest.mark.parametrize("entries", readme_config_examples(), ids=" ".join)
@pytest.mark.integration
def test_readme_config_examples_are_accepted(computed, entries):
    before = snapshot(computed)
    args = ["-n", "--configfile", "tiny.yaml", "--config", *entries]
    result = snakemake(computed, *args, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config error" not in result.stdout + result.stderr
    assert snapshot(computed) == before


@pytest.mark.integration
def test_whole_number_floats_give_the_same_tables_as_integers(tiny_run, tmp_path):
    floats = integers_as_floats(TINY)
    floats["datasets"][0]["seed"] = 0.0
    assert isinstance(floats["seeds"][0], float) and isinstance(floats["train"]["epochs"], float)
    (tmp_path / "floats.yaml").write_text(yaml.safe_dump(floats))
    snakemake(tmp_path, "--cores", "2", "--configfile", "floats.yaml")
    for table in ("runs.csv", "epochs.csv", "geometry.csv", "subspace_pairs.csv"):
        ours = (tmp_path / "results" / "tables" / table).read_bytes()
        assert ours == (tiny_run / "results" / "tables" / table).read_bytes(), table


@pytest.mark.integration
def test_config_that_is_not_yaml_is_rejected(computed):
    (computed / "broken.yaml").write_text("grid: [unclosed\n  rank: 3\n")
    assert_rejected(
        computed, "tiny.yaml", "broken.yaml", key_message="not valid JSON or YAML", one_line=False
    )


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.parametrize(
    "content", ["{not json", '{"runs": "tiny__full_lr0.01_s0", "runs_dir": "../runs"}', ""]
)
def test_unreadable_job_manifest_stops_before_any_job_with_one_line(computed, content):
    """The manifest belongs to the plan of ``--cores 2``, the core count that made them."""
    manifest = sorted((computed / "results" / "jobs").glob("*.json"))[0]
    original, stamp = manifest.read_bytes(), manifest.stat()
    try:
        manifest.write_text(content)
        before = snapshot(computed)
        result = snakemake(computed, "--cores", "2", "--configfile", "tiny.yaml", check=False)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        printed = [line for line in result.stderr.splitlines() if SNAKEMAKE_NOTE not in line]
        name = manifest.relative_to(computed).as_posix()
        assert len(printed) == 1 and printed[0].startswith(f"{name}: not "), result.stderr
        assert snapshot(computed) == before, "results/ changed"
    finally:
        manifest.write_bytes(original)
        os.utime(manifest, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))


def test_a_key_given_twice_in_a_config_file_stops_before_any_job(computed):
    (computed / "twice.yaml").write_text("seeds: [0]\nreuse_runs: true\nseeds: [5]\n")
    line = assert_rejected(
        computed, "tiny.yaml", "twice.yaml", key_message="config error: seeds: given twice"
    )
    assert "twice.yaml (lines 1 and 3)" in line
