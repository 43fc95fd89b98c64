rule tables:
    input:
        job_manifests(),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        epochs=f"{RESULTS}/tables/epochs.csv",
        timings=f"{RESULTS}/tables/timings.csv",
        provenance=f"{RESULTS}/tables/provenance.csv",
    log:
        f"{RESULTS}/logs/tables.log",
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    script:
        "../scripts/tables.py"


rule geometry:
    input:
        runs=job_manifests(),
        tensors=[dataset_files(name)[0] for name in DATASETS],
        meta=[dataset_files(name)[1] for name in DATASETS],
    output:
        geometry=f"{RESULTS}/tables/geometry.csv",
        pairs=f"{RESULTS}/tables/subspace_pairs.csv",
    log:
        f"{RESULTS}/logs/geometry.log",
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        datasets=list(DATASETS),
    script:
        "../scripts/geometry.py"
