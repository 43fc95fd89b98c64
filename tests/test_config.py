"""Config errors name the key and what is allowed, checked through the workflow's own
``lorasweep.config.validated()`` (the few end-to-end cases that also check that nothing runs and
results/ stays untouched live in test_bad_input.py)."""

import copy
import math
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config

from lorasweep.config import (
    ConfigError,
    check_resources,
    parse_strings,
    validated,
)
from lorasweep.planning import resources
from lorasweep.planning.cohorts import order_key, plan_cohorts
from lorasweep.planning.grouping import build_plan
from lorasweep.report.title import drop_inherited_title, report_title
from lorasweep.tasks.synthetic import DatasetSpec

from .conftest import CONFIGS, REPO


def check(config):
    """The workflow's validation without the machine-dependent resource limits, which
    :func:`resource_check` applies against a fixed machine."""
    return validated(config, check_limits=False)


def tiny():
    return copy.deepcopy(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()))


def test_presets_are_valid():
    check(tiny())
    for preset in ("config.yaml", "paper.yaml", "seed_demo.yaml", "methods.yaml"):
        check({**tiny(), **yaml.safe_load((REPO / "config" / preset).read_text())})


@pytest.mark.parametrize(
    ("mutate", "key", "allowed"),
    [
        (lambda c: c["grid"].update(rank=[0]), "grid.rank[0]", ">= 1"),
        (lambda c: c["grid"].update(rank=[2.5]), "grid.rank[0]", "an integer"),
        (lambda c: c["grid"].update(rank=[13]), "grid.rank[0]", "1..12"),
        (lambda c: c["grid"].update(alpha=[0]), "grid.alpha[0]", "> 0"),
        (lambda c: c["grid"].update(lr=[-1e-3]), "grid.lr[0]", "> 0"),
        (
            lambda c: c["grid"].update(scaling=["linear"]),
            "grid.scaling[0]",
            "standard, rslora, constant",
        ),
        (
            lambda c: c["grid"].update(init=["zeros"]),
            "grid.init[0]",
            "kaiming, gaussian, pissa, randn",
        ),
        (lambda c: c["grid"].update(rank=[]), "grid.rank", "must not be empty"),
        (lambda c: c["train"].update(epochs=0), "train.epochs", ">= 1"),
        (lambda c: c["train"].update(batch_size=0), "train.batch_size", "null"),
        (lambda c: c["train"].update(device="tpu"), "train.device", "auto, cpu, cuda"),
        (lambda c: c["train"].update(bias="both"), "train.bias", "none, lora_only, all"),
        (lambda c: c["train"].update(engine="fast"), "train.engine", "batched, single"),
        (
            lambda c: c["train"].update(memory_budget_mib=0),
            "train.memory_budget_mib",
            "a number > 0 or null",
        ),
        (lambda c: c["datasets"][0].update(kind="images"), "datasets[0].kind", "lowrank, noise"),
        (lambda c: c["datasets"][0].update(n_train=0), "datasets[0].n_train", ">= 1"),
        (lambda c: c["datasets"][0].update(noise_std=-0.1), "datasets[0].noise_std", ">= 0"),
        (lambda c: c["datasets"][0].update(task_rank=20), "datasets[0].task_rank", "1..12"),
        (lambda c: c["datasets"][0].update(name="../evil"), "datasets[0].name", "letters, digits"),
        (lambda c: c["datasets"].append(dict(c["datasets"][0])), "datasets", "unique"),
        (
            lambda c: c["datasets"][0].update(source={"n": 10, "top_directions": 15}),
            "datasets[0].source.top_directions",
            "1..14 = in_features − task_rank",
        ),
        (
            lambda c: c["datasets"][0].update(kind="noise", source={"n": 10, "top_directions": 2}),
            "datasets[0].source",
            "lowrank only",
        ),
        (
            lambda c: c["datasets"][0].update(source={"n": 10, "top_directions": 2, "leak": 2}),
            "datasets[0].source.leak",
            "<= 1",
        ),
        (
            lambda c: c["datasets"][0].update(source={"top_directions": 2}),
            "datasets[0].source.n",
            "required",
        ),
        (lambda c: c["datasets"][0].update(compat="tuto"), "datasets[0].compat", "none, tutorial"),
        (
            lambda c: c["datasets"][0].update(compat="tutorial"),
            "datasets[0].compat",
            "tutorial needs kind: noise",
        ),
        (
            lambda c: c.update(extra_grids=[{"bias": ["some"]}]),
            "extra_grids[0].bias[0]",
            "none, lora_only, all",
        ),
        (lambda c: c.update(sedes=[1]), "sedes", "likely a typo of 'seeds'"),
        (lambda c: c.update(results="/etc"), "results", "relative path"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(mutate, key, allowed):
    config = tiny()
    mutate(config)
    with pytest.raises(ConfigError) as caught:
        check(config)
    message = str(caught.value)
    assert message.startswith(f"config error: {key}:"), message
    assert allowed in message
    assert "\n" not in message


def rejected(config, check=check) -> str:
    with pytest.raises(ConfigError) as caught:
        check(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


INTEGER_KEYS = {
    "seeds", "runs_per_job", "epochs", "batch_size", "rank",
    "in_features", "out_features", "task_rank", "n_train", "n_val", "seed",
}  # fmt: skip
"""Every key whose values the schema wants to be integers."""


def integers_as_floats(value, key=None):
    """``value`` with every integer of an :data:`INTEGER_KEYS` key as the float it equals."""
    if isinstance(value, dict):
        return {name: integers_as_floats(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [integers_as_floats(item, key) for item in value]
    if key in INTEGER_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def test_whole_number_floats_give_the_same_runs_and_seeds_as_integers():
    from lorasweep.seeding import derive_seed

    ints = tiny()
    ints["datasets"][0]["seed"] = 7
    floats = integers_as_floats(ints)
    assert isinstance(floats["seeds"][0], float) and isinstance(floats["grid"]["rank"][0], float)
    check(ints)
    check(floats)
    assert repr(floats) == repr(ints)
    int_runs, float_runs = build_plan(ints).runs, build_plan(floats).runs
    assert [r.run_id for r in float_runs] == [r.run_id for r in int_runs]

    def streams(run):
        return [
            derive_seed(run.seed, "init", run.dataset, run.rank),
            derive_seed(run.seed, "shuffle", run.dataset),
            derive_seed(run.seed, "dropout", run.run_id),
        ]

    assert [streams(r) for r in float_runs] == [streams(r) for r in int_runs]
    int_spec = DatasetSpec.from_config(ints["datasets"][0])
    float_spec = DatasetSpec.from_config(floats["datasets"][0])
    assert repr(float_spec) == repr(int_spec)
    assert derive_seed(float_spec.seed, float_spec.name, "base") == derive_seed(
        int_spec.seed, int_spec.name, "base"
    )


NON_FINITE_KEYS = [
    (lambda c, v: c["report"].update(tolerance=v), "report.tolerance"),
    (lambda c, v: c["train"].update(lora_dropout=v), "train.lora_dropout"),
    (lambda c, v: c["datasets"][0].update(noise_std=v), "datasets[0].noise_std"),
    (lambda c, v: c["datasets"][0].update(spectrum_decay=v), "datasets[0].spectrum_decay"),
    (lambda c, v: c["datasets"][0].update(task_scale=v), "datasets[0].task_scale"),
    (lambda c, v: c["grid"].update(alpha=[2, v]), "grid.alpha[1]"),
    (lambda c, v: c["grid"].update(lr=[v]), "grid.lr[0]"),
    (lambda c, v: c["grid"].update(lr_ratio=[v]), "grid.lr_ratio[0]"),
    (lambda c, v: c.update(extra_grids=[{"lr": [v]}]), "extra_grids[0].lr[0]"),
    (lambda c, v: c["full_finetune"].update(lr=[v]), "full_finetune.lr[0]"),
    (lambda c, v: c.update(limits={"memory_gib": v}), "limits.memory_gib"),
    (lambda c, v: c.update(limits={"multiply_adds": v}), "limits.multiply_adds"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, 10**400], ids=["nan", "inf", "1e400"])
@pytest.mark.parametrize(("mutate", "key"), NON_FINITE_KEYS, ids=[k for _, k in NON_FINITE_KEYS])
def test_non_finite_numbers_are_rejected(mutate, key, value):
    config = tiny()
    config["report"] = {}
    mutate(config, value)
    message = rejected(config)
    assert message.startswith(f"config error: {key}: got "), message
    assert "allowed: a " in message


@pytest.mark.parametrize(
    ("mutate", "key", "allowed"),
    [
        (lambda c: c.update(seeds=[0, 2**63]), "seeds[1]", "<= 9223372036854775807"),
        (lambda c: c["datasets"][0].update(seed=2**63), "datasets[0].seed", "<= 922337203685"),
        (lambda c: c["datasets"][0].update(seed=1e300), "datasets[0].seed", "<= 922337203685"),
        (lambda c: c["train"].update(epochs=2**70), "train.epochs", "<= 9223372036854775807"),
        (lambda c: c["train"].update(epochs=1e300), "train.epochs", "<= 9223372036854775807"),
        (lambda c: c["datasets"][0].update(n_val=2**64), "datasets[0].n_val", "<= 92233720"),
    ],
)
def test_integers_beyond_int64_are_rejected(mutate, key, allowed):
    config = tiny()
    mutate(config)
    message = rejected(config)
    assert message.startswith(f"config error: {key}: got "), message
    assert allowed in message


def test_largest_seed_is_accepted():
    config = tiny()
    config["seeds"] = [0, 2**63 - 1]
    config["datasets"][0]["seed"] = 2**63 - 1
    check(config)


@pytest.mark.parametrize(
    ("mutate", "key", "allowed"),
    [
        (lambda c: c.update(results="out\n"), "results", "relative path"),
        (lambda c: c["datasets"][0].update(name="tiny\n"), "datasets[0].name", "1 to 64 letters"),
        (lambda c: c["datasets"][0].update(name="a" * 65), "datasets[0].name", "1 to 64 letters"),
        (lambda c: c["datasets"][0].update(name="a" * 20), "datasets[0].name", "20 or more"),
        (lambda c: c["datasets"][0].update(name="x" + "ab" * 20), "datasets[0].name", "repeats"),
        (lambda c: c["datasets"][0].update(name="t-" + "123" * 20), "datasets[0].name", "repeats"),
    ],
)
def test_bad_names_and_paths(mutate, key, allowed):
    config = tiny()
    mutate(config)
    message = rejected(config)
    assert message.startswith(f"config error: {key}: "), message
    assert allowed in message


def test_names_with_fewer_repeats_are_accepted():
    config = tiny()
    config["datasets"][0]["name"] = "a" * 19
    check(config)


@pytest.mark.parametrize("results", ["taken", "taken/results", "./taken"])
def test_results_folder_that_is_a_file_is_rejected(tmp_path, monkeypatch, results):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    config = tiny()
    config["results"] = results
    message = rejected(config)
    assert message.startswith("config error: results: "), message
    assert "'taken' is an existing file" in message


def test_results_folder_that_exists_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "runs").mkdir(parents=True)
    check(tiny())


def at(config, path):
    for part in path:
        config = config[part]
    return config


def with_overrides(*entries: str) -> dict:
    """tiny.yaml with ``--config`` entries applied as Snakemake applies them."""
    config = tiny()
    update_config(config, parse_config(list(entries)))
    parse_strings(config)
    return config


@pytest.mark.parametrize(
    ("entries", "path", "expected"),
    [
        (["reuse_runs=false"], ("reuse_runs",), False),
        (["reuse_runs=true"], ("reuse_runs",), True),
        (["reuse_runs=False"], ("reuse_runs",), False),
        (["grid={rank:[1,2]}"], ("grid", "rank"), [1, 2]),
        (["grid={lr: [1e-3, .5]}"], ("grid", "lr"), [0.001, 0.5]),
        (["seeds=[0, 1]"], ("seeds",), [0, 1]),
        (["runs_per_job=1e2"], ("runs_per_job",), 100),
        (["train={epochs: 5, batch_size: null}"], ("train",), {"epochs": 5, "batch_size": None}),
        (["limits={memory_gib: 64}"], ("limits", "memory_gib"), 64),
        (["limits={memory_gib: auto}"], ("limits", "memory_gib"), "auto"),
        (["limits={multiply_adds: ~}"], ("limits", "multiply_adds"), None),
        (["report={title: 1e3}"], ("report", "title"), "1e3"),
    ],
)
def test_command_line_values_are_read_as_yaml_where_the_schema_wants(entries, path, expected):
    config = with_overrides(*entries)
    check(config)
    value = at(config, path)
    if isinstance(expected, dict):
        value = {key: value[key] for key in expected}
    assert value == expected
    assert repr(value) == repr(expected)


@pytest.mark.parametrize(
    ("entries", "key", "allowed"),
    [
        (["reuse_runs=maybe"], "reuse_runs", "got 'maybe'; allowed: true or false"),
        (["train={epochs: many}"], "train.epochs", "got 'many'; allowed: an integer >= 1"),
        (["grid={rank: [1.5]}"], "grid.rank[0]", "got 1.5; allowed: an integer"),
        (["report={tolerance: .nan}"], "report.tolerance", "allowed: a finite number > 0"),
    ],
)
def test_bad_command_line_values_name_the_key(entries, key, allowed):
    message = rejected(with_overrides(*entries))
    assert message.startswith(f"config error: {key}: "), message
    assert allowed in message


def readme_config_examples() -> list[list[str]]:
    """The ``key=value`` entries of every ``--config`` example in the READMEs and docs/."""
    examples = []
    docs = sorted((REPO / "docs").glob("*.md"))
    for readme in (REPO / "README.md", REPO / "config" / "README.md", *docs):
        for match in re.finditer(r"--config\s+([^`\n]+)", readme.read_text(encoding="utf-8")):
            entries = []
            for token in shlex.split(match[1], comments=True):
                if "=" not in token or token.startswith("-"):
                    break
                entries.append(token)
            examples.append(entries)
    return examples


def test_readmes_show_config_examples():
    examples = readme_config_examples()
    assert ["reuse_runs=false"] in examples
    assert all(examples) and len(examples) >= 4


@pytest.mark.parametrize("entries", readme_config_examples(), ids=" ".join)
def test_readme_config_examples_are_valid(entries):
    config = with_overrides(*entries)
    check(config)
    assert parse_config(entries).keys() <= config.keys()


GIB = resources.GIB


def resource_check(config, memory_gib=24, gpu_gib=None):
    check(config)
    gpu = gpu_gib * GIB if gpu_gib else None
    check_resources(config, memory_bytes=memory_gib * GIB, gpu_bytes=gpu)


def presets():
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    configs = {"tiny": tiny(), "default": default}
    for name in ("paper", "seed_demo"):
        preset = copy.deepcopy(default)
        preset.update(yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()))
        configs[name] = preset
    return configs


@pytest.mark.parametrize("name", ["tiny", "default", "paper", "seed_demo"])
def test_presets_fit_a_small_machine(name):
    resource_check(presets()[name], memory_gib=4, gpu_gib=4)


@pytest.mark.parametrize(
    ("mutate", "key", "needs"),
    [
        (lambda c: c["datasets"][0].update(in_features=10**8), "datasets[0].in_features", "GiB"),
        (lambda c: c["datasets"][0].update(n_train=10**9), "datasets[0].n_train", "GiB"),
        (lambda c: c["datasets"][0].update(n_val=10**9), "datasets[0].n_val", "GiB"),
        (
            lambda c: c["datasets"][0].update(out_features=10**8, in_features=16),
            "datasets[0].out_features",
            "GiB",
        ),
        (lambda c: c["train"].update(epochs=10**7), "train.epochs", "multiply-adds"),
        (
            lambda c: c["datasets"][0].update(n_train=10**7) or c["train"].update(epochs=400),
            "train.epochs",
            "multiply-adds",
        ),
    ],
)
def test_configs_beyond_this_machine_are_refused_naming_the_key(mutate, key, needs):
    config = tiny()
    mutate(config)
    message = rejected(config, check=resource_check)
    assert message.startswith(f"config error: {key}: got "), message
    assert " about " in message and needs in message


def test_memory_message_gives_the_estimate_and_the_limit():
    config = tiny()
    config["datasets"][0]["in_features"] = 10**8
    message = rejected(config, check=resource_check)
    estimate = resources.generation_bytes(config["datasets"][0]) / GIB
    assert f"needs about {estimate:.1f} GiB of memory" in message
    assert "at most 24.0 GiB (this machine's memory; set limits.memory_gib" in message


def test_training_job_memory_counts_every_dataset_its_runs_use_and_the_gpu():
    config = tiny()
    big = {**config["datasets"][0], "in_features": 4096, "out_features": 4096, "n_train": 10**5}
    config["datasets"] = [big, {**big, "name": "other"}]
    plan, datasets = build_plan(config), {d["name"]: d for d in config["datasets"]}
    budget = resources.budget_bytes(None, "cpu")
    one = resources.job_bytes([r for r in plan.runs if r.dataset == "tiny"], datasets, "batched",
                              budget)  # fmt: skip
    both = resources.job_bytes(plan.runs, datasets, "batched", budget)
    samples = resources.FLOAT32 * (big["n_train"] + big["n_val"]) * (4096 + 4096)
    assert both - one > samples
    jobs = [resources.job_bytes(runs, datasets, "batched", budget) for runs in plan.jobs.values()]
    assert resources.training_bytes(config) == max(jobs)
    config["train"]["device"] = "cuda"
    message = rejected(config, check=lambda c: resource_check(c, memory_gib=64, gpu_gib=4))
    assert "a training job needs about" in message and "of GPU memory" in message
    assert "this machine's GPU" in message


def test_limits_raise_or_switch_off_the_checks():
    config = tiny()
    config["datasets"][0]["in_features"] = 10**8
    config["train"]["epochs"] = 10**7
    config["limits"] = {"memory_gib": None, "multiply_adds": None}
    resource_check(config)
    config["limits"] = {"memory_gib": 1000, "multiply_adds": 1e20}
    resource_check(config)
    config["limits"]["memory_gib"] = 100
    message = rejected(config, check=resource_check)
    assert "datasets[0].in_features" in message and "(limits.memory_gib)" in message
    config["limits"] = {"memory_gib": None, "multiply_adds": 1e6}
    message = rejected(config, check=resource_check)
    assert message.startswith("config error: train.epochs: ")
    assert "at most 1e+06 (limits.multiply_adds" in message


def test_multiply_adds_count_steps_and_grow_with_epochs():
    config = tiny()
    check(config)
    runs = len(build_plan(config).runs)
    assert sum(sum(k.values()) for k in resources.run_counts(config).values()) == runs
    steps = resources.optimizer_steps(config)
    assert steps == runs * 4 * (256 // 64)
    work = resources.multiply_adds(config)
    assert work > steps / runs * resources.STEP_COST, "at least one cohort's dispatch"
    single = copy.deepcopy(config)
    single["train"]["engine"] = "single"
    plan, n_train = build_plan(config), config["datasets"][0]["n_train"]
    cohorts = [c for job in plan.jobs.values() for c in plan_cohorts(job)]
    waves = sum(len({order_key(r, n_train) for r in c}) for c in cohorts)
    dispatch = (runs - waves) * steps / runs * resources.STEP_COST
    assert resources.multiply_adds(single) - work == pytest.approx(dispatch), (
        "the single-run path dispatches every run's steps on their own, a cohort once per wave"
    )
    config["train"]["epochs"] *= 10
    assert 9 < resources.multiply_adds(config) / work < 10.1


def test_run_counts_match_the_plan_with_extra_grids():
    config = presets()["paper"]
    check(config)
    plan = build_plan(config)
    counts = resources.run_counts(config)
    assert sum(sum(k.values()) for k in counts.values()) == len(plan.runs) == 2170


def test_run_counts_match_the_plan_with_a_method_axis():
    config = tiny()
    config["grid"]["method"] = ["lora", "dora"]
    check(config)
    counts = resources.run_counts(config)
    assert sum(sum(k.values()) for k in counts.values()) == len(build_plan(config).runs)
    assert {kind[0] for k in counts.values() for kind in k} == {"lora", "dora", "full"}


def test_machine_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:  10 kB\nMemTotal:       24684092 kB\n")
    assert resources.machine_memory_bytes(meminfo) == 24684092 * 1024
    assert resources.machine_memory_bytes(tmp_path / "missing") is None


def snakefile_imports() -> str:
    """The package modules that every Snakemake process imports while it parses the workflow."""
    files = [REPO / "workflow" / "Snakefile", REPO / "workflow" / "rules" / "common.smk"]
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    found = re.findall(r"^from (lorasweep[\w.]*) import", text, flags=re.M)
    assert len(found) >= 5, found
    return ", ".join(dict.fromkeys(found))


@pytest.mark.parametrize(
    "modules",
    [
        "lorasweep.config, lorasweep.planning.resources",
        "lorasweep.figures.registry, lorasweep.report.html, lorasweep.tables.runs",
        "lorasweep.analysis.summary",
        snakefile_imports(),
    ],
    ids=["config checks", "figure and report jobs", "summary job", "the Snakefile's parse"],
)
def test_modules_that_need_no_tensors_do_not_import_torch(modules):
    """Importing torch costs ~1–2 s of CPU in every job that does it."""
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    env_path = str(REPO / "src")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={"PYTHONPATH": env_path},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


DEEP = dict(name="tf", kind="transformer", d_model=8, n_heads=2, n_layers=2, seq_len=4, d_ff=16,
            shifted="mlp", task_rank=1, noise_std=0.1, n_train=64, n_val=16)  # fmt: skip
NET = dict(name="net", kind="mlp", in_features=6, out_features=4, d_model=8, n_layers=3,
           task_rank=1, noise_std=0.1, n_train=64, n_val=16)  # fmt: skip


def deep(**changes):
    """The tiny config on a transformer (targets attention and mlp), with ``changes`` to it."""
    config = tiny()
    config["datasets"] = [dict(DEEP)]
    config["grid"]["targets"] = ["attention", "mlp"]
    for key, value in changes.items():
        config[key] = value
    return config


def test_deep_presets_are_valid():
    check(yaml.safe_load((CONFIGS / "tiny_deep.yaml").read_text()))
    for preset in ("deep.yaml", "paper_deep.yaml"):
        check({**yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
               **yaml.safe_load((REPO / "config" / preset).read_text())})  # fmt: skip
    check(deep(datasets=[DEEP, NET], grid={**tiny()["grid"], "targets": ["all"]}))


def budget(**block):
    return {"extra_grids": [{"datasets": ["tf"], "targets": ["q", "q|v"], **block}]}


@pytest.mark.parametrize(
    ("config", "key", "allowed"),
    [
        (deep(datasets=[{**DEEP, "n_heads": 3}]), "datasets[0].n_heads", "a divisor of d_model"),
        (deep(datasets=[{**DEEP, "d_model": 0}]), "datasets[0].d_model", "an integer >= 1"),
        (deep(datasets=[{**DEEP, "seq_len": 0}]), "datasets[0].seq_len", "an integer >= 1"),
        (deep(datasets=[{**DEEP, "n_layers": -1}]), "datasets[0].n_layers", "an integer >= 1"),
        (deep(datasets=[{**NET, "out_features": 0}]), "datasets[0].out_features", ">= 1"),
        (deep(datasets=[{**DEEP, "shifted": "xyz"}]), "datasets[0].shifted", "matches no module"),
        (deep(datasets=[{**DEEP, "shifted": "q("}]), "datasets[0].shifted", "not a regular expr"),
        (deep(datasets=[{**DEEP, "task_rank": 9}]), "datasets[0].task_rank",
         "1..8 = the narrowest shifted module (blocks.0.mlp.up: 8→16)"),
        (deep(datasets=[{**DEEP, "task_rank": 0}]), "datasets[0].task_rank", "got 0; allowed: 1.."),
        (deep(datasets=[{k: v for k, v in DEEP.items() if k != "d_ff"}]), "datasets[0].d_ff",
         "required key is missing for kind transformer"),
        (deep(datasets=[{**DEEP, "in_features": 8}]), "datasets[0].in_features",
         "does not apply to kind transformer"),
        (deep(datasets=[{**NET, "n_heads": 2}]), "datasets[0].n_heads", "not apply to kind mlp"),
        (deep(datasets=[{**tiny()["datasets"][0], "shifted": "all"}]), "datasets[0].shifted",
         "does not apply to kind lowrank"),
        (deep(grid={**tiny()["grid"], "targets": ["xyz"]}), "grid.targets[0]",
         "which matches no module; allowed: attention, mlp, all, or a regular expression "
         "matching a module of dataset 'tf' (blocks.<i>.attn.{q,k,v,o}"),
        (deep(datasets=[DEEP, NET]), "grid.targets[0]", "a module of dataset 'net' (layers.<i>)"),
        (deep(datasets=tiny()["datasets"]), "grid.targets", "allowed only where the block has"),
        (deep(grid={**tiny()["grid"], "rank": [9], "targets": ["mlp"]}), "grid.rank[0]",
         "1..8 = the narrowest module that targets 'mlp' adapt on dataset 'tf'"),
        ({**deep(), **budget(rank_budget=3)}, "extra_grids[0].rank_budget", "a multiple of 2"),
        ({**deep(), **budget(rank_budget=2, rank=[1])}, "extra_grids[0].rank_budget", "not both"),
        ({**deep(), **budget(rank_budget=32)}, "extra_grids[0].rank_budget",
         "rank 32; allowed: at most 8"),
        ({**deep(datasets=[DEEP, tiny()["datasets"][0]]),
          "extra_grids": [{"rank_budget": 2, "targets": ["q"]}]},
         "extra_grids[0].rank_budget", "applies to mlp and transformer datasets only"),
    ],
)  # fmt: skip
def test_bad_deep_values_name_the_key_and_what_is_allowed(config, key, allowed):
    with pytest.raises(ConfigError) as caught:
        check(config)
    message = str(caught.value)
    assert message.startswith(f"config error: {key}:"), message
    assert allowed in message, message
    assert "\n" not in message


def merged_over_default(*overrides: dict) -> dict:
    """config/config.yaml with ``overrides`` merged over it as Snakemake merges each
    ``--configfile``, the inherited title handled as the workflow handles it, then validated."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    given: dict = {}
    for override in overrides:
        update_config(config, copy.deepcopy(override))
        update_config(given, copy.deepcopy(override))
    return check(drop_inherited_title(config, given))


def test_default_config_sets_its_own_title():
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert report_title(merged_over_default()) == default["report"]["title"]


def test_a_config_without_a_title_gets_one_naming_its_own_datasets():
    title = report_title(merged_over_default(tiny()))
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert title != default["report"]["title"], "not the default study's title"
    assert "tiny (16→12, task rank 2)" in title and "full fine-tuning" in title
    assert "lowrank256" not in title and "256" not in title

    deep_title = report_title(check(yaml.safe_load((CONFIGS / "tiny_deep.yaml").read_text())))
    assert "tf (transformer, d_model 8, 1 block, task rank 1)" in deep_title
    assert "net (MLP 6→4, 3 layers, task rank 1)" in deep_title


def test_a_given_title_is_kept():
    assert report_title(merged_over_default(tiny(), {"report": {"title": "Mine"}})) == "Mine"


@pytest.mark.parametrize(
    ("limits", "memory_gib", "got"),
    [({"memory_gib": 0.3}, 24, "got 0.3, "), ({}, 0.3, "this machine's memory is 0.3 GiB")],
)
def test_a_memory_limit_below_a_jobs_fixed_allowance_names_the_limit_not_a_size(
    limits, memory_gib, got
):
    config = tiny()
    config["limits"] = limits
    message = rejected(config, check=lambda c: resource_check(c, memory_gib=memory_gib))
    assert message.startswith("config error: limits.memory_gib: "), message
    assert got in message and "Python, torch" in message and "n_train" not in message


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("seeds: [0]\nresults: r\nseeds: [5]\n", "seeds", "lines 1 and 3"),
        ("train:\n  epochs: 2\n  lr: 1\n  epochs: 3\n", "train.epochs", "lines 2 and 4"),
        ("datasets:\n  - name: a\n    n_train: 2\n    n_train: 4\n", "datasets[0].n_train",
         "lines 3 and 4"),
    ],
)  # fmt: skip
def test_a_key_given_twice_in_a_config_file_is_refused_naming_it(tmp_path, text, key, lines):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        validated(tiny(), files=[path])
    message = str(caught.value)
    assert message.startswith(f"config error: {key}: given twice in {path} ({lines})"), message
    (tmp_path / "once.yaml").write_text("seeds: [0]\ntrain: {epochs: 2}\n")
    validated(tiny(), files=[tmp_path / "once.yaml", tmp_path / "not-there.yaml"])


def test_bias_all_is_read_as_lora_only_with_one_notice(capsys):
    """``bias: all`` is PEFT's ``lora_only``: a config that still says ``all`` (in ``train`` or
    an extra grid) trains the same runs, under the same ids, after one line on stderr."""
    new = tiny()
    new["train"]["bias"] = "lora_only"
    new["extra_grids"] = [{"bias": ["none", "lora_only"], "rank": [2]}]
    old = copy.deepcopy(new)
    old["train"]["bias"] = "all"
    old["extra_grids"][0]["bias"] = ["none", "all"]
    validated(new, check_limits=False, notify=True)
    assert capsys.readouterr().err == ""
    validated(old, check_limits=False, notify=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "config notice: train.bias, extra_grids[0].bias: 'all' is now called 'lora_only' "
        "(PEFT's name: the bias of each adapted layer trains); read as 'lora_only'"
    ]
    assert old == new
    ids = [run.run_id for run in build_plan(old).runs]
    assert ids == [run.run_id for run in build_plan(new).runs]
    assert any(run_id.endswith("_biasall_s0") for run_id in ids)
    check(old)
    assert capsys.readouterr().err == "", "no notice where the limits are not checked"


def test_bias_none_keeps_the_default_run_ids():
    config = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                       check_limits=False)  # fmt: skip
    ids = [run.run_id for run in build_plan(config).runs]
    assert "lowrank256__lora_r4_a16_standard_kaiming_lr0.001_s0" in ids
    assert not any("bias" in run_id for run_id in ids)


def methods_config(**grid) -> dict:
    config = yaml.safe_load((CONFIGS / "methods.yaml").read_text())
    config["grid"].update(grid)
    return config


@pytest.mark.parametrize(
    ("mutate", "key", "allowed"),
    [
        (lambda c: c.update(method_settings={"vera": {"alpha": 2}}), "method_settings.vera.alpha",
         "allowed: d_initial, projection_prng_key"),
        (lambda c: c.update(method_settings={"lora": {"r": 2}}), "method_settings",
         "one of adalora"),
        (lambda c: c["grid"].update(method=["oft"], rank=[3]), "grid.rank[0]",
         "allowed for oft: a divisor of in_features"),
        (lambda c: c["grid"].update(method=["hra"], rank=[3]), "grid.rank[0]",
         "allowed for hra: an even rank"),
        (lambda c: c["grid"].update(method=["ia3"]) or c["train"].update(bias="lora_only"),
         "grid.method[0]", "allowed with lora, dora only"),
        (lambda c: c["grid"].update(method=["fourierft"], rank=[10_000]), "grid.rank[0]",
         "allowed for fourierft: 1..192"),
        (lambda c: c["grid"].update(method=["lora", "fourierft"], rank=[100]), "grid.rank[0]",
         "allowed: 1..8"),
        (lambda c: c["grid"].update(method_lr={"bone": [0.1]}), "grid.method_lr", "one of lora"),
    ],
)  # fmt: skip
def test_method_settings_that_peft_would_refuse_are_config_errors(mutate, key, allowed):
    config = methods_config()
    mutate(config)
    message = rejected(config)
    assert message.startswith(f"config error: {key}"), message
    assert allowed in message, message
