"""Files every stage writes and reads: cache-key digests, JSON Lines, folders written whole."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).parent


def json_digest(value: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as sorted JSON: a cache key."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (first 16 hex digits), read in chunks: identifies weights or code."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def module_digests(*modules: str) -> dict[str, str]:
    """:func:`file_digest` of this package's modules (``"data.synthetic"``): the code that made an artefact.

    Cache keys include them, so that an edit to the code builds afresh instead of reading
    back an artefact that the current code would not produce.
    """
    return {f"{m}.py": file_digest(PACKAGE_DIR / f"{m.replace('.', '/')}.py") for m in modules}


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records as JSON Lines (UTF-8), replacing ``path`` only once the new file is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def write_folder(out_dir: str | Path, write: Callable[[Path], None], *, keep_existing: bool = False) -> Path:
    """Write a folder whole: ``write`` fills a temporary sibling, which then takes ``out_dir``'s place.

    A failure part-way leaves the previous ``out_dir`` as it was and removes the partial copy.
    With ``keep_existing`` an existing ``out_dir`` is a finished cache entry: ``write`` is not
    called, and if another process finishes the same entry first, its copy is kept.
    """
    out_dir = Path(out_dir)
    if keep_existing and out_dir.is_dir():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        write(tmp)
        if out_dir.exists() and not keep_existing:
            old = out_dir.with_name(f".{out_dir.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(out_dir)
            except OSError:
                if not (keep_existing and out_dir.is_dir()):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def jsonl_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON Lines file.

    A line that is not a JSON object raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: a JSON object was expected, got {type(record).__name__}")
            yield number, record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, in order (see :func:`jsonl_records`)."""
    return [record for _, record in jsonl_records(path)]
