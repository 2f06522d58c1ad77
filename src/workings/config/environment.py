"""The environment variables workings reads, each in one place.

- ``WORKINGS_PROFILE``: the profile every command and the book run when none is named (default ``demo``).
- ``WORKINGS_RUNS``: where run folders go (default ``runs/`` at the project root).
- ``WORKINGS_CACHE``: where built artefacts such as the tiny model are kept (default ``~/.cache/workings``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_VARIABLE, RUNS_VARIABLE, CACHE_VARIABLE = "WORKINGS_PROFILE", "WORKINGS_RUNS", "WORKINGS_CACHE"
DEFAULT_PROFILE = "demo"


def profile_name() -> str:
    """``$WORKINGS_PROFILE`` (a profile name or a YAML path), else ``demo``."""
    return os.environ.get(PROFILE_VARIABLE) or DEFAULT_PROFILE


def runs_root() -> Path:
    """``$WORKINGS_RUNS``, else ``runs/`` in the project root.

    The project root is the nearest folder up from the working directory holding ``_toc.yml``,
    so chapters (executed from ``book/``) and the command line agree.
    """
    if os.environ.get(RUNS_VARIABLE):
        return Path(os.environ[RUNS_VARIABLE])
    here = Path.cwd().resolve()
    root = next((d for d in (here, *here.parents) if (d / "_toc.yml").is_file()), here)
    return root / "runs"


def cache_dir() -> Path:
    """``$WORKINGS_CACHE``, else ``~/.cache/workings``."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "workings")
