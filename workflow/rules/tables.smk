from lorasweep.planning.runs import rank_settings


rule tables:
    input:
        job_manifests(),
    output:
        runs=report(
            RESULTS.table("runs"),
            caption="../report/runs_table.rst",
            category="Tables",
        ),
        epochs=report(
            RESULTS.table("epochs"),
            caption="../report/epochs_table.rst",
            category="Tables",
        ),
        timings=RESULTS.table("timings"),
        provenance=RESULTS.table("provenance"),
    log:
        RESULTS.log("tables"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("tables"),
    script:
        "../scripts/tables.py"


rule geometry:
    input:
        runs=job_manifests(),
        tensors=[RESULTS.dataset_tensors(name) for name in DATASETS],
        meta=[RESULTS.dataset_meta(name) for name in DATASETS],
    output:
        geometry=RESULTS.table("geometry"),
        pairs=RESULTS.table("subspace_pairs"),
    log:
        RESULTS.log("geometry"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("geometry"),
        datasets=list(DATASETS),
    script:
        "../scripts/geometry.py"


rule lr_optima:
    input:
        RESULTS.table("runs"),
    output:
        RESULTS.table("lr_optima"),
    log:
        RESULTS.log("lr_optima"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("lr_optima"),
    script:
        "../scripts/lr_optima.py"


rule intruders:
    input:
        runs=job_manifests(),
        tensors=[RESULTS.dataset_tensors(name) for name in DATASETS],
        meta=[RESULTS.dataset_meta(name) for name in DATASETS],
    output:
        RESULTS.table("intruders"),
    log:
        RESULTS.log("intruders"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("intruders"),
        datasets=list(DATASETS),
    script:
        "../scripts/intruders.py"


rule oracles:
    input:
        tensors=[RESULTS.dataset_tensors(name) for name in DATASETS],
        meta=[RESULTS.dataset_meta(name) for name in DATASETS],
    output:
        RESULTS.table("oracles"),
    log:
        RESULTS.log("oracles"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("oracles"),
        datasets=list(DATASETS),
        settings=rank_settings(PLAN.runs),
    script:
        "../scripts/oracles.py"


rule forgetting:
    input:
        runs=RESULTS.table("runs"),
        epochs=RESULTS.table("epochs"),
        tensors=[RESULTS.dataset_tensors(name) for name in DATASETS],
        meta=[RESULTS.dataset_meta(name) for name in DATASETS],
    output:
        RESULTS.table("forgetting"),
    log:
        RESULTS.log("forgetting"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("forgetting"),
        datasets=list(DATASETS),
    script:
        "../scripts/forgetting.py"


rule summary:
    input:
        runs=RESULTS.table("runs"),
        epochs=RESULTS.table("epochs"),
        timings=RESULTS.table("timings"),
        pairs=RESULTS.table("subspace_pairs"),
        lr_optima=RESULTS.table("lr_optima"),
        intruders=RESULTS.table("intruders"),
        forgetting=RESULTS.table("forgetting"),
        oracles=RESULTS.table("oracles"),
        geometry=RESULTS.table("geometry"),
    output:
        best_settings=RESULTS.table("best_settings"),
        efficiency=RESULTS.table("efficiency"),
        findings=RESULTS.table("findings"),
        intruder_means=RESULTS.table("intruder_means"),
        gaps=RESULTS.table("gaps"),
        selections=RESULTS.table("selections"),
        methods=RESULTS.table("methods"),
    log:
        RESULTS.log("summary"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("summary"),
        tolerance=config["report"]["tolerance"],
    script:
        "../scripts/summary.py"
