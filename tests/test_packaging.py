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
