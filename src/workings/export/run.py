"""``workings export``: a run's adapter (or the merged model) as a folder, with its card, ready to hand in.

Everything is checked before anything is loaded (the destination, the adapter folder and, when
sending, the credentials). The export is written to a folder; only with ``send=True`` is that
folder uploaded to the Hub or Kaggle.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from workings.config.loading import profile_command
from workings.config.stages import run_layout
from workings.config.schema import Profile
from workings.export.card import licence, model_card
from workings.export.destinations import (Destination, ExportError, parse_destination, require_credentials, send, upload_plan,
                                          where_credentials_are_looked_for, credentials_for)
from workings.export.folder import MergeCost, export_adapter, export_merged, merge_cost
from workings.files import check_replaceable

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    destination: Destination
    folder: Path
    files: list[tuple[str, int]]
    credentials: str  # where they were found, or where they were looked for; never the secret
    sent_to: str | None = None
    cost: MergeCost | None = None  # what a merge in another dtype than the base's changed


def export_folder(profile: Profile, destination: Destination, merged: bool) -> Path:
    """Where the export is written: the destination itself for a folder, else under ``runs/<profile>/export/``."""
    if destination.kind == "folder":
        return Path(destination.name)
    return run_layout(profile).exports / f"{destination.kind}-{destination.name.replace('/', '--')}{'-merged' if merged else ''}"


def run_chain(adapter: Path) -> list[dict]:
    """The ``run.json`` of the run that wrote ``adapter`` and of each run it started from, first stage
    first (each names the adapter it continued, and its digest, in ``started_from``); empty when the
    adapter has none. The walk stops at an adapter trained again since (its digest differs): that
    run is not the one this adapter continued."""
    from workings.files import file_digest

    runs: list[dict] = []
    folder = Path(adapter).parent
    while (folder / "run.json").is_file() and len(runs) < 16:  # a chain of copied folders cannot loop forever
        runs.insert(0, json.loads((folder / "run.json").read_text()))
        started = runs[0].get("started_from")
        if not started or not started.get("adapter"):
            break
        weights = Path(started["adapter"]) / "adapter_model.safetensors"
        if not weights.is_file() or file_digest(weights) != started.get("digest"):
            break
        folder = weights.parent.parent
    return runs


def evaluation_of(profile: Profile, adapter: Path) -> dict:
    """The summaries of the saved evaluation of the base and of ``adapter`` on every benchmark (empty when
    ``workings evaluate`` has not finished them: an export never runs a long evaluation by surprise)."""
    from workings.data.mix import load_mix
    from workings.evaluation.benchmarks import profile_benchmarks
    from workings.evaluation.runs import saved_results
    from workings.evaluation.scoring import summarise_results

    mix_dir = run_layout(profile).mix
    heldout = load_mix(mix_dir)[1] if (mix_dir / "report.json").is_file() else None
    benchmarks = profile_benchmarks(profile, heldout)
    results = {"base": saved_results(profile, benchmarks, None), "tuned": saved_results(profile, benchmarks, adapter)}
    if any(r is None for r in results.values()):
        log.warning("no finished evaluation of the base and this adapter: the card has no results "
                    "(run %s --adapter %s first)", profile_command(profile, "evaluate"), shlex.quote(str(adapter)))
        return {}
    return summarise_results(results)


def export(profile: Profile, adapter: str | Path, to: str, *, merge: bool = False, send_it: bool = False,
           dtype: str | None = None) -> ExportResult:
    """Write the export of ``adapter`` for the destination ``to``; upload it only when ``send_it``.

    A merge is written in ``dtype`` (default the base's ``model.dtype``); when that differs from
    the base's, what it changes in the logits and greedy tokens is measured (``ExportResult.cost``).
    The destination folder is checked first: a file, or a folder holding files workings did not
    write, is refused before anything is loaded.
    """
    from workings.config.schema import DTYPES
    from workings.models.loading import check_adapter, load_tokenizer

    destination = parse_destination(to)
    if dtype is not None and not merge:
        raise ExportError("--dtype: applies to a merged export (--merge); an adapter is exported as training saved it")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    adapter = check_adapter(adapter)
    if send_it:
        if destination.kind == "folder":
            raise ExportError(f"--send: {destination} is a folder; the export is written there, nothing is sent")
        require_credentials(destination)  # before anything is loaded
    folder = export_folder(profile, destination, merge)
    check_replaceable(folder, "--to" if destination.kind == "folder" else "")
    runs = run_chain(adapter)
    run = runs[-1] if runs else None
    mix_file = Path(run["mix"]) / "report.json" if run and run.get("mix") else run_layout(profile).mix / "report.json"
    mix_report = json.loads(mix_file.read_text()) if mix_file.is_file() else None
    name = destination.name if destination.kind == "hub" else folder.absolute().name  # what from_pretrained is given
    card = model_card(profile, merged=merge, run=run, mix_report=mix_report, summaries=evaluation_of(profile, adapter),
                      tokenizer=load_tokenizer(profile.model), name=name, dtype=dtype, earlier=runs[:-1])
    if merge:
        export_merged(profile, adapter, folder, card, dtype=dtype)
    else:
        export_adapter(profile, adapter, folder, card)
    cost = merge_cost(profile, adapter, folder) if merge and dtype not in (None, profile.model.dtype) else None
    if cost is not None:
        log.warning("%s", cost)
    found = credentials_for(destination)
    where = (found.source if found else f"none found (looked in {where_credentials_are_looked_for(destination.kind)})"
             ) if destination.kind != "folder" else "not needed"
    result = ExportResult(destination, folder, upload_plan(folder), where, cost=cost)
    if send_it:
        result.sent_to = send(destination, folder, message=f"workings export of {profile.name} ({adapter})",
                              license_name="Apache 2.0" if licence(profile) == "apache-2.0" else "Gemma")
    return result
