rule dataset:
    output:
        tensors=RESULTS.dataset_tensors("{dataset}"),
        meta=RESULTS.dataset_meta("{dataset}"),
    log:
        RESULTS.log("datasets", "{dataset}"),
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("dataset"),
        spec=lambda wildcards: DATASETS[wildcards.dataset],
    script:
        "../scripts/dataset.py"
