import copy
import inspect
from dataclasses import replace

import pytest
import yaml

from lorasweep.models.registry import DORA, LORA
from lorasweep.planning.cohorts import Progress, aligned, cohort_key, plan_cohorts
from lorasweep.planning.grouping import (
    PARALLEL_JOBS,
    build_plan,
    cohort_pieces,
    group_runs,
    job_count,
)
from lorasweep.planning.resources import (
    cohort_cost,
    network_slot_elements,
    run_bytes,
    run_cost,
    slot_elements,
    uses_gram,
)
from lorasweep.planning.runs import RunSpec, format_number
from lorasweep.tasks.synthetic import DatasetSpec

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


def test_the_method_axis_adds_dora_runs_and_lora_ids_stay_as_they_were():
    config = load(CONFIGS / "tiny.yaml")
    before = [run.run_id for run in build_plan(copy.deepcopy(config)).runs]
    config["grid"]["method"] = ["lora", "dora"]
    runs = build_plan(config).runs
    assert [r.run_id for r in runs if r.method != "dora"] == before
    dora = [r.run_id for r in runs if r.method == "dora"]
    assert len(dora) == 2 * 2 * 2 * 2
    assert "tiny__dora_r4_a8_rslora_kaiming_lr0.01_s1" in dora
    assert all(r.method == "dora" for r in runs if r.run_id.startswith("tiny__dora_"))


def test_every_run_is_in_exactly_one_job_and_jobs_respect_runs_per_job():
    config = load(CONFIGS / "tiny.yaml")
    runs = build_plan(config).runs
    datasets = {d["name"]: d for d in config["datasets"]}
    for per_job in (1, 3, 4, 100):
        for engine in ("single", "batched"):
            jobs = group_runs(runs, datasets, per_job, engine)
            members = [run.run_id for group in jobs.values() for run in group]
            assert sorted(members) == sorted(r.run_id for r in runs)
            assert max(len(group) for group in jobs.values()) <= per_job


@pytest.mark.parametrize("preset", ["config", "paper", "deep", "regret", "paper_deep"])
def test_jobs_depend_on_the_config_alone_and_spread_studies_worth_it(preset):
    """No core count reaches the plan (job ids are the same on every machine); a study whose
    estimated cost is worth it is spread over PARALLEL_JOBS jobs, a tiny one is not."""
    config = load(REPO / "config" / "config.yaml")
    config.update(load(REPO / "config" / f"{preset}.yaml") if preset != "config" else {})
    assert "workers" not in inspect.signature(build_plan).parameters
    jobs = build_plan(copy.deepcopy(config)).jobs
    assert build_plan(copy.deepcopy(config)).jobs.keys() == jobs.keys()
    assert len(jobs) == PARALLEL_JOBS
    assert len(build_plan(load(CONFIGS / "tiny_deep.yaml")).jobs) == 2


@pytest.mark.parametrize("engine", ["single", "batched"])
def test_jobs_have_balanced_estimated_cost(engine):
    """Each engine's jobs balance the one cost model: a cohort of one per run for the single-run
    path, a cohort (one dispatch per step for all its runs) for the batched engine."""
    config = load(REPO / "config" / "config.yaml")
    config["train"]["engine"] = engine
    plan = build_plan(config)
    assert len(plan.jobs) == PARALLEL_JOBS
    dataset = config["datasets"][0]
    costs = [
        sum(cohort_cost(cohort, dataset) for cohort in plan_cohorts(group, engine))
        for group in plan.jobs.values()
    ]
    assert max(costs) / min(costs) < 1.05


def test_batches_share_dataset_shape_and_settings_and_keep_pissa_apart():
    config = load(REPO / "config" / "paper.yaml")
    config["train"] = {**load(REPO / "config" / "config.yaml")["train"], **config["train"]}
    runs = build_plan(config).runs
    batches = plan_cohorts(runs)
    assert sorted(r.run_id for b in batches for r in b) == sorted(r.run_id for r in runs)
    for batch in batches:
        assert len({cohort_key(run) for run in batch}) == 1
        assert len({(run.dataset, run.method, run.rank) for run in batch}) == 1
    pissa = [b for b in batches if b[0].init == "pissa"]
    assert len(pissa) == len(config["task_seeds"]), "one PiSSA batch per task replicate"
    assert all(run.init == "pissa" for batch in pissa for run in batch)
    assert len(plan_cohorts(runs, "single")) == len(runs)
    with pytest.raises(ValueError, match="unknown engine"):
        plan_cohorts(runs, "fast")


@pytest.mark.parametrize("runs_per_job", [5, 16, 40, 256])
def test_batched_jobs_train_whole_pieces_of_batches_within_runs_per_job(runs_per_job):
    config = load(REPO / "config" / "config.yaml")
    runs = build_plan(config).runs
    datasets = {d["name"]: d for d in config["datasets"]}
    jobs = group_runs(runs, datasets, runs_per_job, engine="batched")
    members = [run.run_id for group in jobs.values() for run in group]
    assert sorted(members) == sorted(r.run_id for r in runs)
    assert max(len(group) for group in jobs.values()) <= runs_per_job
    total = sum(cohort_cost(b, datasets[b[0].dataset]) for b in plan_cohorts(runs))
    n_jobs = job_count(len(runs), runs_per_job, total)
    pieces = cohort_pieces(runs, datasets, n_jobs, runs_per_job)
    home = {run.run_id: job for job, group in jobs.items() for run in group}
    for piece in pieces:
        assert len({home[run.run_id] for run in piece}) == 1, "a piece was split between jobs"
        assert len({cohort_key(run) for run in piece}) == 1


def test_job_progress_counts_runs_and_batches_with_an_eta():
    line = Progress(30, 132, 2, 8, cost_done=1.0, cost_total=4.0, elapsed_s=10.0).line("part1")
    assert line == "part1: 30/132 runs, 2/8 cohorts, 10 s elapsed, ETA 30 s"
    assert "ETA ?" in Progress(0, 5, 0, 1, 0.0, 1.0, 0.0).line("part2")


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
        "lora_only",
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


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("kind", ["lowrank", "transformer"])
def test_the_cost_and_memory_models_charge_dora_more_than_lora_of_the_same_rank(kind, batch_size):
    sizes = {"in_features": 256, "out_features": 128, "task_rank": 2}
    if kind == "transformer":
        sizes = {"d_model": 32, "n_heads": 4, "n_layers": 2, "seq_len": 16, "d_ff": 64,
                 "task_rank": 1}  # fmt: skip
    entry = {"name": "d", "kind": kind, "noise_std": 0.1, "n_train": 4096, "n_val": 256, **sizes}
    dataset = DatasetSpec.from_config(entry).as_dict()
    targets = "all" if kind == "transformer" else None
    lora = RunSpec("d", LORA.name, 0, 0.01, 3, batch_size, "none", "cpu", rank=4, alpha=8.0,
                   scaling="standard", init="kaiming", targets=targets)  # fmt: skip
    dora = replace(lora, method=DORA.name)
    assert run_cost(dora, dataset) > run_cost(lora, dataset)
    assert cohort_cost([dora] * 3, dataset) > cohort_cost([lora] * 3, dataset)
    assert run_bytes(dora, dataset) > run_bytes(lora, dataset)
    assert not uses_gram(dora, dataset)
    if kind == "transformer":
        rows = sum(aligned(m) for m in (32,) * 4 + (64, 32)) * 2
        assert network_slot_elements(dora, dataset) == network_slot_elements(lora, dataset) + rows
    else:
        assert slot_elements(dora, 256, 128) == slot_elements(lora, 256, 128) + aligned(128)
        assert uses_gram(lora, dataset) == (batch_size is None)
        merged = (4 + DORA.merged_weight_cost) * 256 * 128
        assert (
            run_cost(dora, dataset) - run_cost(lora, dataset)
            > 3 * (4096 // (batch_size or 4096)) * merged
        )
