"""The install files agree with each other and with the README."""

import re
import tomllib

import yaml

from .conftest import REPO


def names(requirements) -> dict[str, str]:
    parsed = {}
    for req in requirements:
        if req.startswith("-e"):
            continue
        name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()
        parsed[name] = req.replace(" ", "")
    return parsed


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pip_section(path):
    env = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = pyproject()
    expected = names(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert names(pip_section(REPO / "environment.yml")) == expected
    assert "-e ." in pip_section(REPO / "environment.yml")


def test_workflow_conda_env_lists_the_runtime_packages():
    assert names(pip_section(REPO / "workflow" / "envs" / "lorasweep.yaml")) == names(
        pyproject()["dependencies"]
    )


def test_torch_is_pinned():
    assert "torch==2.13.0" in pyproject()["dependencies"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", quick_start, flags=re.M)
    assert commands == ["make run", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_every_rule_that_computes_reruns_when_its_package_code_changes():
    """Snakemake's code trigger sees only a rule's script; the ``code`` parameter
    (``stage_code``) covers the package modules the script imports. The manifest only hashes
    files, so it needs none."""
    missing = []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"(?m)^(?=rule )", path.read_text(encoding="utf-8"))[1:]:
            script = re.search(r'"\.\./scripts/(\w+)\.py"', rule)
            needs_code = script and script[1] != "manifest"
            if needs_code and f'code=stage_code("{script[1]}")' not in rule:
                missing.append(f"{path.name}: {rule.split(':')[0]}")
    assert missing == []
