rule figure:
    input:
        runs=f"{RESULTS}/tables/runs.csv",
        epochs=f"{RESULTS}/tables/epochs.csv",
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/figures/{{figure}}.log",
    conda:
        "../envs/lorasweep.yaml"
    params:
        caption=lambda wildcards: caption_text(wildcards.figure),
    script:
        "../scripts/figure.py"
