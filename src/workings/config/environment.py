"""The environment variables workings reads, each in one place.

- ``WORKINGS_PROFILE``: the profile every command and the book run when none is named (default ``demo``).
- ``WORKINGS_RUNS``: where run folders go (default ``runs/`` at the project root).
- ``WORKINGS_CACHE``: where built artefacts such as the tiny model are kept (default ``~/.cache/workings``).
- ``WORKINGS_TUNIX_PYTHON``: the Python of the Tunix (JAX) environment (default ``.venv-tunix/bin/python``
  in the project root, which ``make`` creates).
- ``WORLD_SIZE``: set by ``accelerate launch`` or ``torchrun`` to the number of processes training together.
- ``LOCAL_RANK``: set by them to this process's place on its machine, which is the GPU it trains on.
- ``ACCELERATE_USE_FSDP``: set by ``accelerate launch`` when its config file asks for FSDP.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_VARIABLE, RUNS_VARIABLE, CACHE_VARIABLE = "WORKINGS_PROFILE", "WORKINGS_RUNS", "WORKINGS_CACHE"
TUNIX_VARIABLE = "WORKINGS_TUNIX_PYTHON"
DEFAULT_PROFILE = "demo"


def profile_name() -> str:
    """``$WORKINGS_PROFILE`` (a profile name or a YAML path), else ``demo``."""
    return os.environ.get(PROFILE_VARIABLE) or DEFAULT_PROFILE


def profile_from_environment() -> bool:
    """Whether ``$WORKINGS_PROFILE`` names the profile (so that an error about it can name the variable)."""
    return bool(os.environ.get(PROFILE_VARIABLE))


def project_root() -> Path:
    """The nearest folder up from the working directory holding ``_toc.yml`` (else the working
    directory), so chapters (executed from ``book/``) and the command line agree."""
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if (d / "_toc.yml").is_file()), here)


def runs_root() -> Path:
    """``$WORKINGS_RUNS``, else ``runs/`` in the project root."""
    if os.environ.get(RUNS_VARIABLE):
        return Path(os.environ[RUNS_VARIABLE])
    return project_root() / "runs"


def tunix_python() -> Path:
    """``$WORKINGS_TUNIX_PYTHON``, else ``.venv-tunix/bin/python`` in the project root."""
    if os.environ.get(TUNIX_VARIABLE):
        return Path(os.environ[TUNIX_VARIABLE])
    return project_root() / ".venv-tunix" / "bin" / "python"


def cache_dir() -> Path:
    """``$WORKINGS_CACHE``, else ``~/.cache/workings``."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "workings")


def world_size() -> int:
    """How many processes train together (``$WORLD_SIZE`` from ``accelerate launch``/``torchrun``; else 1)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def local_rank() -> int:
    """This process's place among those on its machine (``$LOCAL_RANK``; 0 when launched alone)."""
    return int(os.environ.get("LOCAL_RANK") or 0)


def fsdp_launch() -> bool:
    """Whether ``accelerate launch`` asked for FSDP (``$ACCELERATE_USE_FSDP``, from its config file)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


# CPU features that give bfloat16 matrix products a fast path (Intel AMX, AVX512-BF16): without one,
# a CPU emulates bfloat16 arithmetic, slower than float32 (measured 5x on the demo's model).
FAST_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The processor's feature flags as Linux reports them (empty where ``/proc/cpuinfo`` is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_has_fast_bfloat16() -> bool:
    return any(flag in cpu_flags() for flag in FAST_BFLOAT16_FLAGS)
