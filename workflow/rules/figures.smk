rule figure:
    input:
        unpack(get_figure_inputs),
    output:
        pdf=RESULTS.figure("{figure}", "pdf"),
        png=report(
            RESULTS.figure("{figure}", "png"),
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        RESULTS.log("figures", "{figure}"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("figure"),
        caption=get_caption,
    script:
        "../scripts/figure.py"
