rule tables:
    input:
        job_dirs(),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        epochs=f"{RESULTS}/tables/epochs.csv",
        timings=f"{RESULTS}/tables/timings.csv",
    log:
        f"{RESULTS}/logs/tables.log",
    conda:
        "../envs/lorasweep.yaml"
    script:
        "../scripts/tables.py"
