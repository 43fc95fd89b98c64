"""The allowed values of every named option, importable without torch or matplotlib."""

SCALINGS = ("standard", "rslora", "constant")
INITS = ("kaiming", "gaussian", "pissa", "randn")
BIASES = ("none", "all")
KINDS = ("lowrank", "noise")
DEVICES = ("auto", "cpu", "cuda")
METHODS = ("lora", "full")
FIGURES = (
    "loss_vs_params",
    "learning_curves",
    "loss_vs_rank",
    "grad_norm_vs_rank",
    "rank_alpha_heatmap",
    "alpha_lr_heatmap",
    "subspace_similarity",
    "amplification",
    "init_comparison",
    "lora_plus",
    "task_rank_knee",
)
GEOMETRY_FIGURES = ("subspace_similarity", "amplification")
