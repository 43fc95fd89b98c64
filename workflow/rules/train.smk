rule train:
    input:
        unpack(job_inputs),
    output:
        f"{RESULTS}/jobs/{{job}}.json",
    log:
        f"{RESULTS}/logs/train/{{job}}.log",
    conda:
        "../envs/lorasweep.yaml"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
    params:
        runs=job_runs,
        datasets=lambda wildcards: PLAN.job_datasets(wildcards.job),
        reuse=config["reuse_runs"],
    script:
        "../scripts/train.py"
