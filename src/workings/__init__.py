"""workings: teach small open models to show their work as ``<reasoning>…</reasoning><answer>…</answer>``."""

from __future__ import annotations

import hashlib
from pathlib import Path

__version__ = "0.1.0"


def module_digests(*names: str) -> dict[str, str]:
    """Short digests of this package's source files ``<name>.py``: the code that made an artefact.

    Cache keys include them, so that an edit to the code builds afresh instead of reading
    back an artefact that the current code would not produce.
    """
    here = Path(__file__).parent
    return {f"{name}.py": hashlib.sha256((here / f"{name}.py").read_bytes()).hexdigest()[:16] for name in names}
