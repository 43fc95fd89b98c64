"""Atomic, pickle-free file output.

Every writer here writes to a temporary file in the destination folder, flushes it to disk, and
renames it into place, so a crash or a kill never leaves a half-written file under its final name;
an error writing it (a full disk) names the file.
Files get the permissions the umask gives any new file (``mkstemp`` alone would make them 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where Linux shows it (no change to
    the process state), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give a new file (0666) or folder (0777) under the
    current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})
        ) as f:
            os.fchmod(f.fileno(), default_mode())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def _strict(obj: Any) -> Any:
    """Replace NaN and ±inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic, strict JSON: sorted keys, fixed indentation, non-finite numbers as null."""
    write_text(path, json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """CSV with full float precision (``repr`` round-trip), so reruns compare byte for byte."""
    with atomic_open(path) as f:
        frame.to_csv(f, index=False, float_format="%.17g", lineterminator="\n")


METADATA_KEY = "lorasweep"


def tensors_to_bytes(
    tensors: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> bytes:
    """Tensors as a safetensors file (no pickle), with identical bytes every time.

    safetensors keeps metadata in a hash map whose order changes between processes, so the
    metadata is stored as one canonical JSON string under the key ``lorasweep``.
    """
    from safetensors.torch import save

    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)} if metadata else None
    return save(contiguous, metadata=header)


def save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> None:
    """Save :func:`tensors_to_bytes` atomically."""
    write_bytes(path, tensors_to_bytes(tensors, metadata))


def load_tensors(path: str | os.PathLike) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_metadata(path: str | os.PathLike) -> dict:
    """The metadata written by :func:`save_tensors` (empty if there is none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    return json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest(paths, root: str | os.PathLike) -> pd.DataFrame:
    """``path`` (relative to ``root``), ``bytes`` and ``sha256`` of every file in ``paths``,
    descending into folders, sorted by path."""
    root = Path(root)
    files: set[Path] = set()
    for path in map(Path, paths):
        files.update(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else files.add(
            path
        )
    rows = [
        {
            "path": f.relative_to(root).as_posix(),
            "bytes": f.stat().st_size,
            "sha256": sha256_file(f),
        }
        for f in files
    ]
    return pd.DataFrame(rows, columns=["path", "bytes", "sha256"]).sort_values("path")
