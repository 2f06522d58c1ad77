"""The package's layout keeps its promises: stages build on the ones below, one owner per concept."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "workings"
STAGES = ["core", "data", "config", "models", "evaluation", "train", "report", "export"]


def sources(*, but: tuple[str, ...] = ()) -> dict[str, str]:
    """Every module of the package (path relative to the package), except those named in ``but``."""
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))
            if str(p.relative_to(PACKAGE)) not in but}


def test_each_stage_is_a_folder_a_newcomer_finds_by_name():
    assert all((PACKAGE / stage / "__init__.py").is_file() for stage in STAGES)
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py", "files.py"]


def test_the_import_contracts_hold():
    """pyproject.toml's import-linter contracts: stages import only stages below them, and the core
    stays free of torch and the training stack (lazy imports inside functions count too)."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_environment_variables_are_read_in_one_module_each():
    """The project's own variables (WORKINGS_*) in config.environment; the hubs' credential
    variables (HF_TOKEN, KAGGLE_KEY, ...) where the credentials are looked for, in export.destinations;
    export.notebook only hands its own environment on to the notebook's kernel."""
    readers = [name for name, text in sources(but=("config/environment.py", "export/destinations.py")).items()
               if re.search(r"os\.environ\.get|os\.environ\[|os\.getenv", text)]
    assert readers == []
    assert "WORKINGS_" not in (PACKAGE / "export" / "destinations.py").read_text()


def test_library_code_logs_instead_of_printing():
    printers = [name for name, text in sources(but=("cli.py",)).items() if re.search(r"^\s*print\(", text, re.M)]
    assert printers == []


def test_the_stop_tokens_are_spelled_in_one_module():
    spellers = [name for name, text in sources(but=("core/chat.py",)).items()
                if '"<end_of_turn>"' in text or '"<eos>"' in text]
    assert spellers == []


def test_the_tiny_model_id_is_special_cased_in_one_module():
    special = [name for name, text in sources(but=("models/loading.py",)).items()
               if re.search(r"""(==|!=)\s*["']tiny["']|\bTINY\b""", text)]
    assert special == []


def test_the_gemma_linear_layers_are_listed_once():
    listers = [name for name, text in sources(but=("config/schema.py",)).items() if '"gate_proj"' in text]
    assert listers == []


def test_numbers_in_answers_and_replies_have_one_grammar():
    """Numbers with thousands separators are read by core.answers alone (``NUMBER``); the
    computations of shown work have their own operand grammar in core.steps."""
    readers = [name for name, text in sources(but=("core/answers.py",)).items() if r"[\d,]" in text or r"\d{1,3}" in text]
    assert readers == []
