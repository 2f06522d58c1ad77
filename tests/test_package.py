"""The package root's helpers that every stage shares."""

import pytest

from workings.files import write_folder


def fill(text):
    def write(tmp):
        (tmp / "value.txt").write_text(text)

    return write


def test_write_folder_replaces_the_whole_folder(tmp_path):
    out = write_folder(tmp_path / "out", fill("first"))
    (out / "stale.txt").write_text("from the first write")
    write_folder(out, fill("second"))
    assert sorted(p.name for p in out.iterdir()) == ["value.txt"] and (out / "value.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_write_leaves_the_previous_folder_and_no_partial_copy(tmp_path):
    out = write_folder(tmp_path / "out", fill("first"))

    def broken(tmp):
        (tmp / "value.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder(out, broken)
    assert (out / "value.txt").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_existing_cache_entry_is_kept_without_writing(tmp_path):
    out = write_folder(tmp_path / "entry", fill("first"), keep_existing=True)

    def never(tmp):
        raise AssertionError("write called for a finished entry")

    assert write_folder(out, never, keep_existing=True) == out and (out / "value.txt").read_text() == "first"


def test_a_cache_entry_finished_meanwhile_by_another_process_wins(tmp_path):
    out = tmp_path / "entry"

    def racing(tmp):
        write_folder(out, fill("other process"))  # finishes while this one is still writing
        (tmp / "value.txt").write_text("this process")

    write_folder(out, racing, keep_existing=True)
    assert (out / "value.txt").read_text() == "other process" and [p.name for p in tmp_path.iterdir()] == ["entry"]
