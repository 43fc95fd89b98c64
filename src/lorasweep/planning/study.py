"""Which study a results folder holds, and whether this run may write there.

A study is named by its config file: the first ``--configfile`` given (the others, and
``--config`` values, are edits of it), or ``config/config.yaml`` when none is. Its path is
written relative to the workflow's clone when the file lies inside it, else relative to the
working folder. The content of a config cannot tell an edit of a study from another study (an
edited grid plans other runs, yet it is the same study), its file can; hence the name.

The first run that trains into a folder records its study there (``study.json``). A run of
another study into that folder stops before any job, with one line naming ``results`` and how to
choose another folder, unless ``replace_results`` says to take the folder over. A folder written
before studies were recorded is taken over without a word.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lorasweep.config import ConfigError
from lorasweep.io import read_json, write_json
from lorasweep.layout import Layout

DEFAULT_CONFIG = Path("config") / "config.yaml"


def study_name(configfiles: Sequence[str | Path], clone: str | Path, workdir: str | Path) -> str:
    """The study's name: its config file's path (module docstring)."""
    clone, workdir = Path(clone).resolve(), Path(workdir).resolve()
    path = Path(configfiles[0]) if configfiles else clone / DEFAULT_CONFIG
    path = (workdir / path).resolve()
    for base in (clone, workdir):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return path.as_posix()


def recorded_study(layout: Layout) -> str | None:
    """The study ``study.json`` records in the folder, or None where there is none to read."""
    try:
        study = read_json(layout.study).get("study")
    except (OSError, ValueError, AttributeError):
        return None
    return study if isinstance(study, str) else None


def check_owner(layout: Layout, study: str, replace: bool = False) -> None:
    """Refuse, with one line, a run of ``study`` into a folder that holds another study, unless
    ``replace``."""
    owner = recorded_study(layout)
    if owner is None or owner == study or replace:
        return
    raise ConfigError(
        "results",
        f"{layout.root}/ holds the study of {owner}, not of {study}; choose another folder "
        f"(results: in {study}, or --config results=<folder>), or replace that study with "
        "--config replace_results=true",
    )


def claim(layout: Layout, study: str) -> None:
    """Record ``study`` as the folder's study."""
    if recorded_study(layout) != study:
        write_json(layout.study, {"study": study})


def unwritable_folder(layout: Layout) -> str | None:
    """The first folder of the results folder this run cannot create files in (the folder, or
    its nearest existing parent, and each existing subfolder), or None when all can."""
    root = Path(layout.root)
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    if not folders:
        parent = root.absolute().parent
        while not parent.exists():
            parent = parent.parent
        folders = [parent]
    for folder in folders:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return os.path.relpath(folder)
    return None


def unwritable_message(folder: str) -> str:
    """The one line that stops a run whose results folder cannot be written."""
    return (
        f"results: cannot create files in {folder}/ (read-only or not ours), so no job could "
        "write its results; make it writable, or choose another folder with "
        "--config results=<folder>"
    )
