"""Snakemake script: remove figure files this config does not draw, then write the SHA-256 of
every result file two runs of the config can compare (not the wall-clock ones)."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from pathlib import Path

    from lorasweep.io import manifest, write_text
    from lorasweep.layout import WALL_CLOCK, Layout
    from lorasweep.planning.freshness import remove_stale_figures
    from lorasweep.tables.runs import iter_run_dirs

    sm = snakemake  # noqa: F821
    layout = Layout(Path(sm.output[0]).parent.as_posix())
    for path in remove_stale_figures(layout, sm.params.figures):
        print(f"removed {path}: this config does not draw it")
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.jobs)]
    study = [layout.study] if Path(layout.study).is_file() else []
    table = manifest([*sm.input.results, *study, *run_dirs], root=layout.root)
    table = table[~table["path"].str.rsplit("/", n=1).str[-1].isin(WALL_CLOCK)]
    write_text(sm.output[0], table.to_csv(sep="\t", index=False, lineterminator="\n"))
    print(f"{len(table)} files")
