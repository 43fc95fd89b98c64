rule dataset:
    output:
        tensors=f"{RESULTS}/datasets/{{dataset}}.safetensors",
        meta=f"{RESULTS}/datasets/{{dataset}}.json",
    log:
        f"{RESULTS}/logs/datasets/{{dataset}}.log",
    conda:
        "../envs/lorasweep.yaml"
    params:
        spec=lambda wildcards: DATASETS[wildcards.dataset],
    script:
        "../scripts/make_dataset.py"
