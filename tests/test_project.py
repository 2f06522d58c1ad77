"""The project's own promises: paired notebooks in sync, one dependency list, README commands."""

import re
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))


def package_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {package_name(r) for r in pip if not r.startswith("-e")} == {package_name(r) for r in declared}


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {toc["root"]} | {c["file"] for c in toc.get("chapters", [])}
    assert {f"book/{p.stem}" for p in CHAPTERS} == listed


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_paired_notebook_matches_its_chapter(chapter):
    notebook = ROOT / "book" / "notebooks" / f"{chapter.stem}.ipynb"
    assert notebook.is_file(), f"{notebook} is missing: run `make pair`"
    md, nb = jupytext.read(chapter), jupytext.read(notebook)
    assert [(c.cell_type, c.source) for c in md.cells] == [(c.cell_type, c.source) for c in nb.cells], (
        f"{notebook.name} has drifted from {chapter.name}: run `make pair`")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_are_myst_with_a_jupytext_header(chapter):
    header = yaml.safe_load(chapter.read_text().split("---")[1])
    assert header["jupytext"]["formats"] == "md:myst,notebooks//ipynb"
    assert header["kernelspec"]["name"] == "python3"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.DOTALL)
    assert blocks[0].strip().splitlines() == ["make book", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_book_build_fails_on_cell_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
