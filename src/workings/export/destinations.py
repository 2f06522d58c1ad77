"""Where an export goes (a folder, the Hugging Face Hub, Kaggle Models), the credentials each needs,
and the upload itself.

Nothing is sent unless asked: :func:`upload_plan` lists what would be sent with sizes, and
:func:`send` is the only function that reaches the network. Credentials are read from the places
the hubs' own clients read them; a token is never printed, logged or written anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from workings.files import MARKER

KAGGLE_FRAMEWORKS = ("transformers", "pytorch", "jax", "flax", "keras", "tensorflow", "other")


# The host each destination's client talks to, for messages.
HOSTS = {"hub": "huggingface.co", "kaggle": "www.kaggle.com"}


class ExportError(ValueError):
    """A destination or credential that cannot be used; the message names the flag or the places looked."""


@dataclass(frozen=True)
class Destination:
    kind: str  # "folder", "hub" or "kaggle"
    name: str  # the folder, the Hub repo id, or the Kaggle handle owner/model/framework/variation

    def __str__(self) -> str:
        return self.name if self.kind == "folder" else f"{self.kind}:{self.name}"


def parse_destination(text: str) -> Destination:
    """``hub:<user>/<repo>``, ``kaggle:<owner>/<model>/<framework>/<variation>``, or a local folder."""
    if text.startswith("hub:"):
        repo = text.removeprefix("hub:")
        parts = repo.split("/")
        if len(parts) != 2 or not all(parts):
            raise ExportError(f"--to {text}: a Hub destination is hub:<user>/<repo>")
        return Destination("hub", repo)
    if text.startswith("kaggle:"):
        handle = text.removeprefix("kaggle:")
        parts = handle.split("/")
        if len(parts) != 4 or not all(parts):
            raise ExportError(f"--to {text}: a Kaggle destination is kaggle:<owner>/<model>/<framework>/<variation>")
        if parts[2].lower() not in KAGGLE_FRAMEWORKS:
            raise ExportError(f"--to {text}: framework {parts[2]!r} is not one of {', '.join(KAGGLE_FRAMEWORKS)}")
        return Destination("kaggle", handle)
    if not text.strip():
        raise ExportError("--to: empty destination")
    return Destination("folder", text)


@dataclass(frozen=True)
class Credentials:
    """Where a credential was found (never the secret itself in any text this object gives)."""

    source: str
    secret: str
    user: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r})"


def hub_credentials() -> Credentials | None:
    """``HF_TOKEN`` (or the older ``HUGGING_FACE_HUB_TOKEN``), else the token file ``hf auth login`` writes."""
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(variable):
            return Credentials(f"${variable}", os.environ[variable].strip())
    path = hub_token_path()
    if path.is_file() and path.read_text().strip():
        return Credentials(str(path), path.read_text().strip())
    return None


def hub_token_path() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH)


def kaggle_config_path() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"


def kaggle_credentials() -> Credentials | None:
    """``KAGGLE_USERNAME`` and ``KAGGLE_KEY``, else ``~/.kaggle/kaggle.json`` (or ``$KAGGLE_CONFIG_DIR``)."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Credentials("$KAGGLE_USERNAME and $KAGGLE_KEY", os.environ["KAGGLE_KEY"], os.environ["KAGGLE_USERNAME"])
    path = kaggle_config_path()
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ExportError(f"{path}: not valid JSON ({err.msg})") from None
        if config.get("username") and config.get("key"):
            return Credentials(str(path), config["key"], config["username"])
    return None


def where_credentials_are_looked_for(kind: str) -> str:
    if kind == "hub":
        return f"$HF_TOKEN, $HUGGING_FACE_HUB_TOKEN or {hub_token_path()} (hf auth login)"
    return f"$KAGGLE_USERNAME with $KAGGLE_KEY, or {kaggle_config_path()}"


def credentials_for(destination: Destination) -> Credentials | None:
    if destination.kind == "hub":
        return hub_credentials()
    if destination.kind == "kaggle":
        return kaggle_credentials()
    return None


def require_credentials(destination: Destination) -> Credentials:
    found = credentials_for(destination)
    if found is None:
        raise ExportError(f"no credentials for {destination}: looked in {where_credentials_are_looked_for(destination.kind)}")
    return found


def upload_plan(folder: str | Path) -> list[tuple[str, int]]:
    """Every file of ``folder`` that would be sent, with its size in bytes, in path order."""
    folder = Path(folder)
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                  if p.is_file() and p.name != MARKER)


def send(destination: Destination, folder: str | Path, *, message: str, license_name: str = "Gemma") -> str:
    """Upload ``folder`` to the destination (the only call here that reaches the network); returns its address.

    The Hub: the repository is created if missing, then the folder is uploaded as one commit.
    Kaggle: ``kagglehub.model_upload`` creates the model and its variation if missing and adds a version.
    The marker that claims the folder for workings (:data:`workings.files.MARKER`) stays behind. A
    failure to reach the host is one :class:`ExportError` naming the host and where the export is kept.
    """
    credentials = require_credentials(destination)
    if destination.kind not in HOSTS:
        raise ExportError(f"{destination}: a folder destination is written, not sent")
    try:
        if destination.kind == "hub":
            from huggingface_hub import HfApi

            api = HfApi(token=credentials.secret)
            api.create_repo(destination.name, repo_type="model", exist_ok=True, private=True)
            api.upload_folder(repo_id=destination.name, folder_path=str(folder), commit_message=message,
                              ignore_patterns=[MARKER])
            return f"https://{HOSTS['hub']}/{destination.name}"
        import kagglehub

        os.environ.setdefault("KAGGLE_USERNAME", credentials.user or "")
        os.environ.setdefault("KAGGLE_KEY", credentials.secret)
        kagglehub.model_upload(destination.name, str(folder), license_name=license_name, version_notes=message,
                               ignore_patterns=[MARKER])
    except Exception as err:  # the clients raise their own HTTP and connection errors, each with its own type
        raise ExportError(f"could not send to {destination} ({HOSTS[destination.kind]}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'no message'}); the export is kept in {folder}: "
                          "run the same command again to send it") from err
    owner, model, framework, variation = destination.name.split("/")
    return f"https://{HOSTS['kaggle']}/models/{owner}/{model}/{framework}/{variation}"
