import copy

import pytest
import yaml

from lorasweep.planning.grouping import build_plan, estimated_cost, group_runs
from lorasweep.planning.runs import format_number

from .conftest import CONFIGS, REPO


def load(path):
    return yaml.safe_load(path.read_text())


def test_run_ids_are_stable_unique_and_readable():
    config = load(CONFIGS / "tiny.yaml")
    plan = build_plan(config)
    ids = [run.run_id for run in plan.runs]
    assert len(ids) == len(set(ids)) == 2 * (2 * 2 * 2) + 2
    assert "tiny__lora_r4_a8_rslora_kaiming_lr0.01_s1" in ids
    assert "tiny__full_lr0.01_s0" in ids
    assert [r.run_id for r in build_plan(copy.deepcopy(config)).runs] == ids


def test_every_run_is_in_exactly_one_job_and_jobs_respect_runs_per_job():
    config = load(CONFIGS / "tiny.yaml")
    runs = build_plan(config).runs
    datasets = {d["name"]: d for d in config["datasets"]}
    for per_job in (1, 3, 4, 100):
        for workers in (None, 1, 2, 3):
            jobs = group_runs(runs, datasets, per_job, workers)
            members = [run.run_id for group in jobs.values() for run in group]
            assert sorted(members) == sorted(r.run_id for r in runs)
            if workers:
                assert len(jobs) % workers == 0 or len(jobs) == len(runs)
            if not workers or workers == 1:
                assert max(len(group) for group in jobs.values()) <= per_job


def test_jobs_have_balanced_estimated_cost():
    config = load(REPO / "config" / "config.yaml")
    plan = build_plan(config, workers=2)
    assert len(plan.jobs) == 2
    dataset = config["datasets"][0]
    costs = [sum(estimated_cost(r, dataset) for r in group) for group in plan.jobs.values()]
    assert max(costs) / min(costs) < 1.05


def test_default_and_seed_demo_presets_expand():
    default = load(REPO / "config" / "config.yaml")
    plan = build_plan(default)
    lora = [r for r in plan.runs if r.method == "lora"]
    assert {r.rank for r in lora} == {1, 2, 4, 8, 16, 32, 64}
    assert {r.scaling for r in lora} == {"standard", "rslora"}
    assert any(r.method == "full" for r in plan.runs)
    demo = {**default, **load(REPO / "config" / "seed_demo.yaml")}
    runs = build_plan(demo).runs
    assert len(runs) == 4, "the demo's method and the corrected one, on two datasets"
    run = next(r for r in runs if r.dataset == "seed_demo" and r.init == "randn")
    assert (run.rank, run.init, run.scaling, run.alpha, run.bias) == (
        4,
        "randn",
        "constant",
        1.0,
        "all",
    )
    assert (run.lr, run.epochs, run.batch_size, run.seed) == (0.01, 10, None, 42)
    assert run.run_id == "seed_demo__lora_r4_a1_constant_randn_lr0.01_biasall_s42"
    corrected = [r for r in runs if r.init == "kaiming"]
    assert {(r.scaling, r.alpha, r.bias) for r in corrected} == {("standard", 8, "none")}
    assert {r.dataset for r in corrected} == {"seed_demo", "seed_demo_learnable"}


@pytest.mark.parametrize(
    ("value", "text"), [(8, "8"), (8.0, "8"), (0.001, "0.001"), (1e-5, "1e-05")]
)
def test_format_number(value, text):
    assert format_number(value) == text
