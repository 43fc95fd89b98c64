rule train:
    input:
        unpack(get_train_inputs),
    output:
        RESULTS.job_manifest("{job}"),
    log:
        RESULTS.log("train", "{job}"),
    conda:
        "../envs/lorasweep.yaml"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
    params:
        code=stage_code("train"),
        runs=get_job_runs,
        runs_digest=lambda wildcards: get_job_runs(wildcards).digest(),
        datasets=lambda wildcards: PLAN.job_datasets(wildcards.job),
        runs_dir=RESULTS.runs_dir,
        reuse=config["reuse_runs"],
        engine=config["train"]["engine"],
        memory_budget_mib=config["train"]["memory_budget_mib"],
    script:
        "../scripts/train.py"
