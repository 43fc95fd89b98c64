"""Snakemake script: SHA-256 of every result file, so two machines can compare runs."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from pathlib import Path

    from lorasweep.io import manifest, write_text
    from lorasweep.tables.runs import iter_run_dirs

    sm = snakemake  # noqa: F821
    run_dirs = [run_dir for _, run_dir in iter_run_dirs(sm.input.jobs)]
    table = manifest([*sm.input.results, *run_dirs], root=Path(sm.output[0]).parent)
    write_text(sm.output[0], table.to_csv(sep="\t", index=False, lineterminator="\n"))
    print(f"{len(table)} files")
