"""Replicated tasks at the data layer: a task seed other than 0 redraws W₀, ΔW*, the splits and
the noise; task seed 0 is the dataset as it always was; the same task seed gives the same
bytes."""

import math

import pytest
import torch

from lorasweep.io import sha256_file
from lorasweep.seeding import generator
from lorasweep.tasks import storage, synthetic

from .test_test_split import KINDS


def generate(kind: str, **overrides) -> synthetic.Dataset:
    return synthetic.generate(synthetic.DatasetSpec(**{**KINDS[kind], **overrides}))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_task_seed_gives_the_same_bytes(kind, tmp_path):
    paths = []
    for copy in ("a", "b"):
        paths.append((tmp_path / f"{copy}.safetensors", tmp_path / f"{copy}.json"))
        storage.save(generate(kind, task_seed=2), *paths[-1])
    assert sha256_file(paths[0][0]) == sha256_file(paths[1][0])
    assert paths[0][1].read_text() == paths[1][1].read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_another_task_seed_redraws_every_tensor(kind):
    today, other = generate(kind), generate(kind, task_seed=1)
    assert today.tensors.keys() == other.tensors.keys()
    for key, tensor in today.tensors.items():
        if tensor.std() > 0 and not key.endswith("norms.0.weight"):
            assert not torch.equal(tensor, other[key]), key


def test_task_seeds_share_the_spectrum_but_not_the_directions():
    truths = [synthetic.ground_truth(generate("lowrank", task_seed=k)) for k in (0, 1, 5)]
    for truth in truths[1:]:
        for mine, ref in zip(truth.singular_values, truths[0].singular_values, strict=True):
            assert mine == pytest.approx(ref, rel=1e-5, abs=1e-6)
    shifts = [generate("lowrank", task_seed=k)["delta_W"].double() for k in (0, 1, 5)]
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        cosine = (shifts[a] * shifts[b]).sum() / (shifts[a].norm() * shifts[b].norm())
        assert abs(float(cosine)) < 0.5


def test_task_seed_zero_is_the_dataset_as_it_was():
    spec = synthetic.DatasetSpec(**KINDS["lowrank"])
    assert spec.task_seed == 0 and "task_seed" not in spec.as_dict()
    assert synthetic.DatasetSpec(**KINDS["lowrank"], task_seed=3).as_dict()["task_seed"] == 3
    data = synthetic.generate(spec)
    gen = generator(3, "t", "base")
    w0 = torch.randn(12, 20, generator=gen, dtype=torch.float64) / math.sqrt(20)
    assert torch.equal(data["W0"], w0.float())
    round_trip = synthetic.DatasetSpec.from_config(spec.as_dict() | {"task_seed": 3})
    assert round_trip.task_seed == 3


def tiny_config(**overrides) -> dict:
    from lorasweep.sequential import load_config

    from .conftest import CONFIGS

    config = load_config(CONFIGS / "tiny.yaml")
    return {**config, **overrides}


def test_the_default_task_seeds_plan_todays_runs():
    from lorasweep.planning.runs import expand_runs, replicates

    config = tiny_config()
    assert config["task_seeds"] == [0]
    runs = expand_runs(config)
    assert runs == expand_runs({k: v for k, v in config.items() if k != "task_seeds"})
    assert all(run.task_seed == 0 and run.data == "tiny" for run in runs)
    assert runs[0].run_id == "tiny__lora_r1_a2_standard_kaiming_lr0.01_s0"
    assert "task_seed" not in runs[0].as_dict()
    assert replicates(config) == {"tiny": config["datasets"][0]}


def test_each_task_seed_is_a_replicate_of_the_whole_grid():
    from lorasweep.planning.cohorts import plan_cohorts
    from lorasweep.planning.grouping import build_plan
    from lorasweep.planning.runs import RunSpec, expand_runs, replicates

    today = expand_runs(tiny_config())
    config = tiny_config(task_seeds=[0, 2])
    runs = expand_runs(config)
    assert len(runs) == 2 * len(today)
    assert [r for r in runs if r.task_seed == 0] == today
    other = [r for r in runs if r.task_seed == 2]
    assert [r.run_id for r in other] == [f"{r.run_id}_t2" for r in today]
    assert {r.data for r in other} == {"tiny.t2"}
    assert RunSpec.from_dict(other[0].as_dict()) == other[0]
    assert list(replicates(config)) == ["tiny", "tiny.t2"]
    assert replicates(config)["tiny.t2"]["task_seed"] == 2
    for cohort in plan_cohorts(runs):
        assert len({run.task_seed for run in cohort}) == 1
    plan = build_plan(config)
    assert {name for job in plan.jobs for name in plan.job_datasets(job)} == {"tiny", "tiny.t2"}


def test_the_in_process_runner_trains_each_replicate_on_its_own_data(tmp_path):
    import pandas as pd

    from lorasweep.io import read_json
    from lorasweep.sequential import run_in_process

    config = tiny_config(task_seeds=[0, 1])
    config["train"] = {**config["train"], "epochs": 1}
    config["grid"] = {**config["grid"], "rank": [1], "alpha": [2], "scaling": ["standard"]}
    run_in_process(config, tmp_path)
    runs = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert sorted(runs["task_seed"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert set(runs["dataset"]) == {"tiny"}
    for row in runs.itertuples():
        data = "tiny" if row.task_seed == 0 else f"tiny.t{row.task_seed}"
        meta = read_json(tmp_path / "datasets" / f"{data}.json")
        provenance = read_json(tmp_path / "runs" / row.run_id / "provenance.json")
        assert provenance["dataset"]["sha256"] == meta["sha256"]
        assert meta["spec"].get("task_seed", 0) == row.task_seed
    first, other = (runs[runs["task_seed"] == k].set_index("seed") for k in (0, 1))
    assert (first["final_val_loss"] != other["final_val_loss"]).all()


@pytest.mark.parametrize(
    ("value", "problem"),
    [([], "must not be empty"), ([0, 0], "duplicate"), ([-1], ">= 0"), (["x"], "an integer")],
)
def test_bad_task_seeds_are_one_line_naming_the_key(value, problem):
    from lorasweep.config import ConfigError, validated

    from .test_config import tiny

    config = tiny() | {"task_seeds": value}
    with pytest.raises(ConfigError) as caught:
        validated(config, check_limits=False)
    message = str(caught.value)
    assert message.startswith("config error: task_seeds") and problem in message, message
    assert "\n" not in message


@pytest.mark.integration
def test_the_workflow_generates_and_trains_each_replicate(tmp_path):
    """A dry run: one dataset job per replicate, and the tables read every replicate."""
    import shutil

    from .conftest import CONFIGS, snakemake

    shutil.copy(CONFIGS / "tiny.yaml", tmp_path / "tiny.yaml")
    result = snakemake(tmp_path, "-n", "--configfile", "tiny.yaml", "--config", "task_seeds=[0, 3]")
    out = result.stdout + result.stderr
    assert "results/datasets/tiny.t3.safetensors" in out
    stats = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if len(line.split()) == 2 and line.split()[1].isdigit()}  # fmt: skip
    assert stats["dataset"] == "2" and stats["oracles"] == "1"


def test_the_default_config_at_task_seeds_0_plans_the_same_jobs_as_without_task_seeds():
    from lorasweep.planning.grouping import build_plan
    from lorasweep.sequential import load_config

    default = load_config()
    assert len(default["task_seeds"]) >= 2, "the default study replicates its task"
    config = {**default, "task_seeds": [0]}
    without = {k: v for k, v in config.items() if k != "task_seeds"}
    plan, plain = build_plan(config), build_plan(without)
    assert plan.jobs == plain.jobs
    assert not any(run.run_id.endswith(("_t0", "_t1")) for run in plan.runs)
    assert {name for job in plan.jobs for name in plan.job_datasets(job)} == {"lowrank256"}
