"""Files every stage writes and reads: cache-key digests, JSON Lines, folders written whole and
claimed as workings' own; and whether a host can be reached, before a download is attempted."""

from __future__ import annotations

import hashlib
import json
import os
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


# Every folder workings writes holds this file: a command replaces a folder only when it finds it
# (or the caller recognises an earlier version's folder), so a user's own folder is never replaced.
MARKER = ".workings"


class NotOurs(FileExistsError):
    """A path that holds something workings did not write, which a command would have replaced."""


def owned(path: str | Path) -> bool:
    """Whether ``path`` is a folder workings wrote (it holds :data:`MARKER`)."""
    return (Path(path) / MARKER).is_file()


def mark(folder: str | Path, what: str) -> None:
    """Claim ``folder`` as written by workings (``what`` it holds: a mix, a run, an export)."""
    (Path(folder) / MARKER).write_text(json.dumps({"written_by": "workings", "holds": what}) + "\n")


def check_replaceable(path: str | Path, flag: str = "", recognise: Callable[[Path], bool] | None = None) -> Path:
    """Refuse, before any work, a ``path`` that a command writing a folder there would replace but
    that is not its own: a file, or a folder that is neither empty nor written by workings (nor
    recognised by ``recognise``, for folders of earlier versions); also a place it cannot write in.
    ``flag`` names the option that gave the path (``--out``)."""
    path = Path(path)
    named = f"{flag} {path}" if flag else str(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise NotOurs(f"{named}: is a file, not a folder; nothing was changed (give a folder's path)")
    if path.is_dir() and any(path.iterdir()) and not owned(path) and not (recognise and recognise(path)):
        raise NotOurs(f"{named}: the folder holds files workings did not write, and would be replaced; nothing "
                      "was changed (give an empty or new folder, or move those files away yourself)")
    check_writable(path, named)
    return path


def check_writable(path: str | Path, named: str | None = None) -> None:
    """Fail now, not after hours of work, when nothing can be created at ``path`` (or in its nearest
    existing parent): a read-only file system, a folder without write permission, a file in the way."""
    path = Path(path).absolute()
    named = named or str(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotOurs(f"{named}: {existing} is a file, so no folder can be made there")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".workings-probe-")
    except OSError as err:
        raise PermissionError(f"{named}: cannot write in {existing} ({err.strerror}); nothing was written") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions a new file gets from the umask: the
    temporary folder it was written in, and some writers (safetensors among them), make them private,
    which locks a shared machine's other users out of a result."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def set_aside(target: Path, put_new: Callable[[], None]) -> None:
    """Move the folder ``target`` to a fresh hidden sibling, call ``put_new`` (which puts the new
    folder at ``target``), then remove the old one; if ``put_new`` fails the old one goes back."""
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
    old.rmdir()  # a name no one else holds, for the rename
    target.rename(old)
    try:
        put_new()
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_folder(out_dir: str | Path, write: Callable[[Path], None], *, keep_existing: bool = False,
                 what: str = "output", recognise: Callable[[Path], bool] | None = None) -> Path:
    """Write a folder whole: ``write`` fills a temporary sibling, which then takes ``out_dir``'s place.

    A failure part-way leaves the previous ``out_dir`` as it was and removes the partial copy. Only
    a folder workings wrote (or an empty one) is replaced; anything else at ``out_dir`` raises
    :class:`NotOurs` before ``write`` is called (see :func:`check_replaceable`). The folder gets the
    usual permissions (a temporary folder's are private). With ``keep_existing`` an existing
    ``out_dir`` is a finished cache entry: ``write`` is not called, and if another process finishes
    the same entry first, its copy is kept.
    """
    out_dir = Path(out_dir)
    if keep_existing and out_dir.is_dir():
        return out_dir
    check_replaceable(out_dir, recognise=recognise)
    target = out_dir.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        write(tmp)
        mark(tmp, what)
        usual_permissions(tmp)
        if target.exists() and not keep_existing:
            set_aside(target, lambda: tmp.rename(target))
        else:
            try:
                tmp.rename(target)
            except OSError:
                if not (keep_existing and target.is_dir()):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class Damaged(ValueError):
    """A file workings reads back that is truncated or damaged; the message names it."""


def check_safetensors(path: Path) -> None:
    """Raise :class:`Damaged` naming ``path`` when it is not a whole safetensors file (its header and
    every tensor's bytes inside the file), without reading the tensors."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise Damaged(f"{path}: {size} bytes, shorter than a safetensors header")
        length = int.from_bytes(head, "little")
        if length > size - 8:
            raise Damaged(f"{path}: truncated ({size:,} bytes; its header alone says {length + 8:,})")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Damaged(f"{path}: damaged (its header is not JSON)") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise Damaged(f"{path}: truncated ({size:,} bytes of {8 + length + end:,})")


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


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why the host of ``url`` cannot be reached now (its name does not resolve, or it does not
    answer within ``timeout`` seconds), or None when it answers. The hubs' clients retry for a
    minute before they give up; this says it in seconds."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or url, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host} cannot be reached ({err.strerror or type(err).__name__})"
