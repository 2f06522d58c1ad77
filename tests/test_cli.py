import json

from workings.cli import main


def test_build_mix_writes_the_mix_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "mix"
    assert main(["build-mix", "--profile", "demo", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["profile"], report["model"]) == ("demo", "tiny")
    assert (out / "train" / "state.json").is_file() and (out / "heldout" / "state.json").is_file()
    printed = capsys.readouterr().out
    assert f"{report['totals']['train_rows']} training rows, {report['totals']['heldout']} held out" in printed
