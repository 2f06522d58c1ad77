"""``workings export``: a run's adapter (or the merged model) as a folder, with its card, ready to hand in.

Everything is checked before anything is loaded (the destination, the adapter folder and, when
sending, the credentials). The export is written to a folder; only with ``send=True`` is that
folder uploaded to the Hub or Kaggle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from workings.config.loading import run_dir
from workings.config.schema import Profile
from workings.export.card import model_card
from workings.export.destinations import (Destination, parse_destination, require_credentials, send, upload_plan,
                                          where_credentials_are_looked_for, credentials_for)
from workings.export.folder import export_adapter, export_merged

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    destination: Destination
    folder: Path
    files: list[tuple[str, int]]
    credentials: str  # where they were found, or where they were looked for; never the secret
    sent_to: str | None = None


def export_folder(profile: Profile, destination: Destination, merged: bool) -> Path:
    """Where the export is written: the destination itself for a folder, else under ``runs/<profile>/export/``."""
    if destination.kind == "folder":
        return Path(destination.name)
    return run_dir(profile) / "export" / f"{destination.kind}-{destination.name.replace('/', '--')}{'-merged' if merged else ''}"


def evaluation_of(profile: Profile, adapter: Path) -> dict:
    """The summaries of the saved evaluation of the base and of ``adapter`` on every benchmark (empty when
    ``workings evaluate`` has not finished them: an export never runs a long evaluation by surprise)."""
    from workings.data.mix import load_mix
    from workings.evaluation.benchmarks import profile_benchmarks
    from workings.evaluation.runs import saved_results
    from workings.evaluation.scoring import summarise_results

    mix_dir = run_dir(profile) / "mix"
    heldout = load_mix(mix_dir)[1] if (mix_dir / "report.json").is_file() else None
    benchmarks = profile_benchmarks(profile, heldout)
    results = {"base": saved_results(profile, benchmarks, None), "tuned": saved_results(profile, benchmarks, adapter)}
    if any(r is None for r in results.values()):
        log.warning("no finished evaluation of the base and this adapter: the card has no results "
                    "(run workings evaluate --profile %s --adapter %s first)", profile.name, adapter)
        return {}
    return summarise_results(results)


def export(profile: Profile, adapter: str | Path, to: str, *, merge: bool = False, send_it: bool = False) -> ExportResult:
    """Write the export of ``adapter`` for the destination ``to``; upload it only when ``send_it``."""
    from workings.models.loading import check_adapter, load_tokenizer

    destination = parse_destination(to)
    adapter = check_adapter(adapter)
    if send_it:
        if destination.kind == "folder":
            raise ValueError(f"--send: {destination} is a folder; the export is written there, nothing is sent")
        require_credentials(destination)  # before anything is loaded
    run_file = adapter.parent / "run.json"
    run = json.loads(run_file.read_text()) if run_file.is_file() else None
    mix_file = Path(run["mix"]) / "report.json" if run and run.get("mix") else run_dir(profile) / "mix" / "report.json"
    mix_report = json.loads(mix_file.read_text()) if mix_file.is_file() else None
    folder = export_folder(profile, destination, merge)
    name = destination.name if destination.kind == "hub" else folder.name  # what from_pretrained is given
    card = model_card(profile, merged=merge, run=run, mix_report=mix_report, summaries=evaluation_of(profile, adapter),
                      tokenizer=load_tokenizer(profile.model), name=name)
    (export_merged if merge else export_adapter)(profile, adapter, folder, card)
    found = credentials_for(destination)
    where = (found.source if found else f"none found (looked in {where_credentials_are_looked_for(destination.kind)})"
             ) if destination.kind != "folder" else "not needed"
    result = ExportResult(destination, folder, upload_plan(folder), where)
    if send_it:
        result.sent_to = send(destination, folder, message=f"workings export of {profile.name} ({adapter})")
    return result
