"""The package modules that a piece of code depends on, and a digest of their code that
ignores docstrings, comments and layout (importable without torch, so the Snakefile can use it).

The run folders' reuse key (:mod:`lorasweep.jobs.reuse`) digests the training code this way, and
each derived stage's rule gets the digest of the modules its script imports as a parameter, so
that Snakemake reruns a table, figure or report whose code changed in what it computes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _module_file(package: Path, module: str) -> Path | None:
    """The file of ``lorasweep.<...>`` module ``module`` under ``package``, if it is one."""
    parts = module.split(".")[1:]
    base = package.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _enclosing_package(package: Path, path: Path) -> list[str]:
    """The dotted package that ``path``'s relative imports start from (none outside it): a
    module's package, or for an ``__init__.py`` the package it defines."""
    if not path.is_relative_to(package):
        return []
    here = ["lorasweep", *path.relative_to(package).with_suffix("").parts]
    return here[:-1]


@functools.cache
def imported_files(package: Path, path: Path) -> frozenset[Path]:
    """The package's modules that ``path`` imports (anywhere in it), with the packages above
    them, whose ``__init__`` runs first. ``path`` may lie outside the package (a script)."""
    here = _enclosing_package(package, path)
    modules = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            modules += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    found = set()
    for module in modules:
        if module == "lorasweep" or module.startswith("lorasweep."):
            parts = module.split(".")
            for end in range(1, len(parts) + 1):
                file = _module_file(package, ".".join(parts[:end]))
                if file is not None:
                    found.add(file)
    return frozenset(found)


def closure(package: Path, roots: Iterable[Path]) -> list[Path]:
    """``roots`` and every package module they import, transitively, sorted."""
    todo, files = list(roots), set()
    while todo:
        path = todo.pop()
        if path not in files:
            files.add(path)
            todo.extend(imported_files(package, path) - files)
    return sorted(files)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` without its docstrings: every statement that is a lone string (a module's,
    class's, function's or constant's docstring), which never changes what the code does."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                kept = [
                    stmt
                    for stmt in body
                    if not (
                        isinstance(stmt, ast.Expr)
                        and isinstance(stmt.value, ast.Constant)
                        and isinstance(stmt.value.value, str)
                    )
                ]
                setattr(node, field, kept or [ast.Pass()])
    return tree


@functools.cache
def _code_of(package: Path, path: Path) -> bytes:
    """``path``'s name and syntax tree without docstrings, as the digest reads them."""
    name = path.relative_to(package).as_posix() if path.is_relative_to(package) else path.name
    tree = _without_docstrings(ast.parse(path.read_bytes(), filename=name))
    return name.encode() + b"\0" + ast.dump(tree).encode() + b"\0"


def digest(package: Path, files: Iterable[Path]) -> str:
    """SHA-256 of each file's syntax tree without docstrings, named by its path relative to the
    package (or its file name, for a script outside it): any change to code or a constant
    changes it, a comment, docstring or layout edit does not."""
    hashed = hashlib.sha256()
    for path in files:
        hashed.update(_code_of(package, path))
    return hashed.hexdigest()


def script_code(script: Path, package: Path = PACKAGE) -> str:
    """The digest of a workflow script and every package module it imports."""
    return digest(package, closure(package, [script]))
