"""The allowed values of every named option, importable without torch or matplotlib.

Methods, inits and scaling rules come from their records in :mod:`lorasweep.models.registry`.
"""

from lorasweep.models.registry import (
    ADAPTER_METHODS,
    INIT_RECORDS,
    METHOD_RECORDS,
    SCALING_RECORDS,
)

SCALINGS = tuple(s.name for s in SCALING_RECORDS)
INITS = tuple(i.name for i in INIT_RECORDS)
BIASES = ("none", "lora_only")
"""Whether the base bias of each adapted layer trains, by PEFT's names (``bias="lora_only"``)."""
BIAS_ALIASES = {"all": "lora_only"}
"""Former names still accepted in a config, read as the new ones with a notice."""
SINGLE_LAYER_KINDS = ("lowrank", "noise")
DEEP_KINDS = ("mlp", "transformer")
KINDS = SINGLE_LAYER_KINDS + DEEP_KINDS
COMPATS = ("none", "tutorial")
DEVICES = ("auto", "cpu", "cuda")
METHODS = tuple(m.name for m in METHOD_RECORDS)
GRID_METHODS = ADAPTER_METHODS
ENGINE_METHODS = tuple(m.name for m in METHOD_RECORDS if not m.through_peft)
"""The methods this package's engine trains (and exports in PEFT's format itself)."""
PEFT_METHODS = tuple(m.name for m in METHOD_RECORDS if m.through_peft)
"""The methods trained through real PEFT, one run at a time."""
TARGET_PRESETS = ("attention", "mlp", "all")


def test_size(dataset) -> int:
    """Samples in a dataset's test split (a config entry or a spec's fields): ``n_test``, by
    default ``n_val``."""
    n_test = dataset.get("n_test")
    return dataset["n_val"] if n_test is None else n_test
