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
