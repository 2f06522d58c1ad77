"""The project's own promises: paired notebooks in sync, one dependency list, README commands."""

import re
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]]


def locked_versions() -> dict[str, str]:
    """name -> exact version of every package in requirements.lock (comments and blank lines skipped)."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_of_pyproject_within_its_range():
    pins = locked_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `make lock`"
        assert Version(pins[name]) in requirement.specifier, f"requirements.lock has {name}=={pins[name]}, outside {requirement}"


def test_the_lock_holds_the_cpu_torch_that_make_installs():
    assert locked_versions()["torch"] == "2.13.0+cpu"
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH ?= $(shell grep -m1 '^torch==' $(LOCK))" in makefile and "--no-deps -r" in makefile


def test_environment_yml_installs_the_lock_with_the_lock_s_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock", "-e ."]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert f"with Python {python.removeprefix('python=')}" in (ROOT / "requirements.lock").read_text()


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


def test_the_kaggle_notebook_matches_its_markdown():
    md, nb = jupytext.read(ROOT / "kaggle" / "inference.md"), jupytext.read(ROOT / "kaggle" / "inference.ipynb")
    assert [(c.cell_type, c.source) for c in md.cells] == [(c.cell_type, c.source) for c in nb.cells], (
        "kaggle/inference.ipynb has drifted from kaggle/inference.md: run `make pair`")


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


def prose_words(chapter: Path) -> int:
    """Words a reader of the page reads: the Markdown outside code cells, a glued value counting one word."""
    text = chapter.read_text().split("---", 2)[2]
    text = re.sub(r"```\{code-cell\}.*?```", " ", text, flags=re.DOTALL)
    text = re.sub(r"^:[a-z-]+:.*$", " ", text, flags=re.MULTILINE)  # directive options
    text = re.sub(r"\{[a-z:]+\}`[^`]*`", " value ", text)
    return len(re.findall(r"[A-Za-z0-9][\w'’.,%-]*", text))


def test_the_writeup_stays_within_the_competition_limit_of_1500_words():
    words = prose_words(ROOT / "book" / "writeup.md")
    assert 500 < words <= 1500, f"book/writeup.md has {words} words"


def test_every_table_and_figure_a_chapter_shows_is_numbered_and_captioned():
    """Chapters show tables through numbered_table and figures through glue:figure, never bare."""
    for chapter in CHAPTERS:
        text = chapter.read_text()
        for name in re.findall(r'glued_figure\("(fig-[\w-]+)"', text):
            assert re.search(rf"```\{{glue:figure\}} {name}\n:name: {name}\n\n\S", text), f"{chapter.name}: {name} has no caption"
        assert not re.search(r"^fig = ", text, re.M), f"{chapter.name} draws a figure that is not glued with a caption"
