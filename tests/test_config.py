"""Config errors name the key and what is allowed (unit level; the workflow-level tests that
check nothing runs and results stay untouched live in test_workflow.py)."""

import copy

import jsonschema
import pytest
import yaml

from lorasweep.config import ConfigError, check_semantics, describe_schema_error

from .conftest import CONFIGS, REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def check(config):
    validator = jsonschema.Draft202012Validator(SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise describe_schema_error(error)
    check_semantics(config)


def tiny():
    return copy.deepcopy(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()))


def test_presets_are_valid():
    check(tiny())
    check(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))


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
        (lambda c: c["train"].update(bias="lora_only"), "train.bias", "none, all"),
        (lambda c: c["datasets"][0].update(kind="images"), "datasets[0].kind", "lowrank, noise"),
        (lambda c: c["datasets"][0].update(n_train=0), "datasets[0].n_train", ">= 1"),
        (lambda c: c["datasets"][0].update(noise_std=-0.1), "datasets[0].noise_std", ">= 0"),
        (lambda c: c["datasets"][0].update(task_rank=20), "datasets[0].task_rank", "1..12"),
        (lambda c: c["datasets"][0].update(name="../evil"), "datasets[0].name", "letters, digits"),
        (lambda c: c["datasets"].append(dict(c["datasets"][0])), "datasets", "unique"),
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
