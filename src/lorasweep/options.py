"""The allowed values of every named option, importable without torch or matplotlib."""

SCALINGS = ("standard", "rslora", "constant")
INITS = ("kaiming", "gaussian", "pissa", "randn")
BIASES = ("none", "all")
KINDS = ("lowrank", "noise")
COMPATS = ("none", "tutorial")
DEVICES = ("auto", "cpu", "cuda")
METHODS = ("lora", "full")
