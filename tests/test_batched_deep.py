"""The batched engine on the deep kinds (mlp, transformer) against the single-run path: losses
to 1e-5, a run's numbers bitwise independent of its cohort and of its wave, divergence of one
run while the others go on, and the planner's view of deep runs."""

import dataclasses
import math

import pytest
import torch

from lorasweep.io import load_metadata, load_tensors, read_json
from lorasweep.jobs.run_folder import write_run
from lorasweep.planning.cohorts import batchable, cohort_key, plan_cohorts
from lorasweep.planning.resources import cohort_cost, cohort_waves, run_bytes
from lorasweep.tasks import synthetic
from lorasweep.training.batched import train_cohort
from lorasweep.training.loop import train_run
from tests.test_batched import assert_same_run
from tests.test_deep import MLP, TRANSFORMER, full, lora

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    small = dict(n_train=48, n_val=16)
    return {
        "tf": synthetic.generate(synthetic.DatasetSpec.from_config({**TRANSFORMER, **small})),
        "net": synthetic.generate(synthetic.DatasetSpec.from_config({**MLP, **small})),
    }


def assert_bitwise(a, b):
    assert a.epochs == b.epochs
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


NOISE_ONLY = ("attn.k.bias",)
"""The key projection's bias has an exactly zero gradient (softmax is invariant to adding the
same score to every key), so under full fine-tuning Adam moves it by rounding noise alone, in
either engine; its trained value is compared by neither."""


def deep_cohorts(name: str) -> dict[str, list]:
    other = "mlp" if name == "tf" else "layers.0|layers.2"
    return {
        "lora": [lora(name), lora(name, seed=1, alpha=2.0, lr=0.003),
                 lora(name, scaling="rslora", lr_ratio=4.0), lora(name, init="gaussian", seed=2)],
        "targets, bias trains": [lora(name, targets=other, bias="lora_only"),
                                 lora(name, targets=other, bias="lora_only", seed=3, alpha=1.0)],
        "full batch": [lora(name, batch_size=None), lora(name, batch_size=None, seed=1)],
        "pissa": [lora(name, init="pissa"), lora(name, init="pissa", seed=2, alpha=2.0)],
        "dropout": [lora(name, dropout=0.2), lora(name, dropout=0.2, seed=1, alpha=2.0)],
        "full fine-tuning": [full(name), full(name, seed=1, lr=0.003)],
        "alone": [lora(name, rank=1, init="randn", scaling="constant", alpha=0.5)],
        "dora": [lora(name, method="dora"), lora(name, method="dora", seed=1, lr_ratio=4.0),
                 lora(name, method="dora", scaling="rslora", init="gaussian")],
        "dora, targets, bias trains": [lora(name, method="dora", targets=other, bias="lora_only")],
        "dora, pissa, dropout": [lora(name, method="dora", init="pissa", dropout=0.2),
                                 lora(name, method="dora", init="pissa", dropout=0.2, seed=2)],
    }  # fmt: skip


CASES = [(name, case) for name in ("tf", "net") for case in deep_cohorts(name)]


@pytest.mark.parametrize(("name", "case"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_deep_batched_runs_equal_the_single_run_path(data, name, case):
    specs = deep_cohorts(name)[case]
    dataset = data[name]
    assert all(batchable(s, dataset.spec.as_dict()) for s in specs)
    for batched, spec in zip(train_cohort(specs, dataset), specs, strict=True):
        assert batched.spec == spec
        single = train_run(spec, dataset)
        assert_same_run(batched, single, noise_only=NOISE_ONLY)
        assert batched.base_weight is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf", "net"])
@pytest.mark.parametrize("overrides", [{}, {"batch_size": None}, {"init": "pissa"},
                                       {"dropout": 0.3}],
                         ids=["mini-batches", "full batch", "pissa", "dropout"])  # fmt: skip
def test_a_deep_runs_numbers_do_not_depend_on_its_batch_bitwise(data, name, overrides):
    """Alone (with its twin), with runs of its own seed (rows shared), with runs of other
    seeds (rows gathered per run), and split one run at a time: the same bits."""
    dataset = data[name]
    target = lora(name, **overrides)
    same_seed = [lora(name, **{**overrides, "alpha": a}) for a in (2.0, 3.0, 5.0)]
    other_seeds = [lora(name, **{**overrides, "seed": s, "lr": 0.02}) for s in (1, 2)]
    alone = train_cohort([target], dataset)[0]
    assert_bitwise(train_cohort([*same_seed[:2], target, same_seed[2]], dataset)[2], alone)
    assert_bitwise(train_cohort([*other_seeds, target], dataset)[-1], alone)
    assert_bitwise(train_cohort([*same_seed, target, *other_seeds], dataset)[3], alone)
    assert_bitwise(train_cohort([*other_seeds, target], dataset, memory_budget_mib=1e-6)[-1], alone)


def test_deep_full_fine_tuning_does_not_depend_on_its_batch_bitwise(data):
    target = full("net", lr=0.003)
    alone = train_cohort([target], data["net"])[0]
    mates = [full("net", seed=s) for s in (0, 1, 2)]
    assert_bitwise(train_cohort([*mates, target], data["net"])[-1], alone)
    assert_bitwise(train_cohort([*mates, target], data["net"], memory_budget_mib=1e-6)[-1], alone)


@pytest.mark.slow
def test_splitting_a_deep_cohort_into_waves_changes_no_result_bitwise(data):
    dataset = data["tf"]
    specs = [lora("tf", seed=s, lr=lr) for s in (0, 1) for lr in (0.001, 0.01, 0.03)]
    whole = train_cohort(specs, dataset)
    one = run_bytes(specs[0], dataset.spec.as_dict())
    assert len(cohort_waves(specs, dataset.spec.as_dict(), 3 * one)) == 2
    for budget_mib in (1e-6, 3 * one / 2**20):
        split = train_cohort(specs, dataset, memory_budget_mib=budget_mib)
        for a, b in zip(split, whole, strict=True):
            assert_bitwise(a, b)


@pytest.mark.parametrize("name", ["tf", "net"])
def test_a_diverging_deep_run_stops_and_the_others_go_on(data, name):
    dataset = data[name]
    exploding = lora(name, lr=1e20, alpha=1e6, init="randn", scaling="constant", epochs=5)
    others = [lora(name, epochs=5, seed=s) for s in range(2)]
    results = train_cohort([others[0], exploding, others[1]], dataset)
    diverged, single = results[1], train_run(exploding, dataset)
    assert diverged.status == single.status == "diverged"
    assert diverged.diverged_epoch == single.diverged_epoch
    assert len(diverged.epochs) == len(single.epochs) == single.diverged_epoch + 1
    assert math.isnan(diverged.final["val_loss"])
    assert math.isnan(diverged.test_loss) and math.isnan(single.test_loss)
    assert diverged.population_loss is single.population_loss is None
    for mine, ref in zip(diverged.epochs[:-1], single.epochs[:-1], strict=True):
        assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert diverged.train_state_bytes == single.train_state_bytes
    for result, spec in zip([results[0], results[2]], others, strict=True):
        assert result.status == "ok" and len(result.epochs) == 6
        assert_bitwise(result, train_cohort([spec], dataset)[0])


def test_the_planner_batches_deep_runs_by_targets_rank_and_dropout(data):
    entry = data["tf"].spec.as_dict()
    specs = [lora("tf"), lora("tf", seed=1), lora("tf", targets="mlp"), lora("tf", rank=1),
             full("tf"), full("tf", seed=1), lora("tf", dropout=0.1)]  # fmt: skip
    assert all(batchable(s, entry) for s in specs)
    assert cohort_key(specs[0]) == cohort_key(specs[1]) != cohort_key(specs[2])
    cohorts = plan_cohorts(specs, datasets={"tf": entry})
    assert [len(b) for b in cohorts] == [2, 1, 1, 2, 1]
    with pytest.raises(ValueError, match="do not share a cohort"):
        train_cohort([specs[0], specs[2]], data["tf"])
    for cohort in cohorts:
        assert cohort_cost(cohort, entry) > 0
    assert run_bytes(full("tf"), entry) > run_bytes(lora("tf"), entry) > 0
    assert run_bytes(lora("tf", batch_size=None), entry) > run_bytes(lora("tf"), entry)
    grown = dataclasses.replace(data["tf"].spec, n_layers=4).as_dict()
    assert run_bytes(lora("tf"), grown) > run_bytes(lora("tf"), entry)


@pytest.mark.parametrize(
    "spec",
    [lora("tf", targets="q|v", bias="lora_only"), lora("net", init="pissa"), full("net")],
    ids=["tf lora, bias trains", "net pissa", "net full fine-tuning"],
)
def test_a_batched_deep_runs_folder_matches_the_single_run_paths(data, spec, tmp_path):
    dataset = data[spec.dataset]
    folders = {"batched": train_cohort([spec], dataset)[0], "single": train_run(spec, dataset)}
    for name, result in folders.items():
        write_run(tmp_path / name, result, None, {})
    batched, single = tmp_path / "batched", tmp_path / "single"
    assert sorted(p.name for p in batched.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not (batched / "peft").exists()
    weights = "weights.safetensors"
    assert load_metadata(batched / weights) == load_metadata(single / weights)
    mine, ref = load_tensors(batched / weights), load_tensors(single / weights)
    assert list(mine) == list(ref)
    assert all(mine[k].shape == ref[k].shape for k in ref)
    metrics = read_json(batched / "metrics.json")
    expected = read_json(single / "metrics.json")
    assert metrics.keys() == expected.keys()
    for key in ("adapter_bytes", "adapted_modules", "adapted_types", "trainable_params"):
        assert metrics[key] == expected[key]


ILL_CONDITIONED = dict(init="randn", scaling="constant", alpha=16.0, lr_ratio=4.0, dropout=0.2)
"""A randn-initialised B at a constant scale of 16 starts the transformer at a loss of about 10⁷:
rounding differences between the engines are amplified by training there, so the 1e-5 claim
is not made for such runs (see the engine's docstring)."""


def test_ill_conditioned_runs_agree_at_epoch_0_and_stay_finite(data):
    specs = [lora("tf", seed=seed, lr=0.03, **ILL_CONDITIONED) for seed in (0, 1)]
    for batched, spec in zip(train_cohort(specs, data["tf"]), specs, strict=True):
        single = train_run(spec, data["tf"])
        assert batched.epochs[0]["val_loss"] > 1e6, "the case must stay ill-conditioned"
        for key in ("train_loss", "val_loss"):
            assert batched.epochs[0][key] == pytest.approx(single.epochs[0][key], rel=1e-6)
        losses = [e[k] for e in batched.epochs for k in ("train_loss", "val_loss")]
        assert all(math.isfinite(x) for x in losses)
