"""The package root's helpers that every stage shares."""

import pytest

from workings.files import MARKER, NotOurs, check_writable, write_folder


def fill(text):
    def write(tmp):
        (tmp / "value.txt").write_text(text)

    return write


def test_write_folder_replaces_the_whole_folder(tmp_path):
    out = write_folder(tmp_path / "out", fill("first"))
    (out / "stale.txt").write_text("from the first write")
    write_folder(out, fill("second"))
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "value.txt"] and (out / "value.txt").read_text() == "second"
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


def never(tmp):
    raise AssertionError("write called for a path that is not workings' to replace")


def test_a_folder_workings_did_not_write_is_refused_before_writing_and_left_as_it_is(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(NotOurs, match=f"{mine}: the folder holds files workings did not write, and would be replaced; "
                                      "nothing was changed"):
        write_folder(mine, never)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_file_in_the_way_is_refused_and_left_as_it_is(tmp_path):
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    with pytest.raises(NotOurs, match="thesis.tex: is a file, not a folder; nothing was changed"):
        write_folder(tmp_path / "thesis.tex", never)
    assert (tmp_path / "thesis.tex").read_text() == "\\documentclass{article}"
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_an_empty_folder_is_written_into_and_a_recognised_one_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (write_folder(tmp_path / "empty", fill("new")) / "value.txt").read_text() == "new"
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "report.json").write_text("{}")  # what an earlier version wrote, without the marker
    write_folder(tmp_path / "older", fill("new"), recognise=lambda p: (p / "report.json").is_file())
    assert sorted(p.name for p in (tmp_path / "older").iterdir()) == [MARKER, "value.txt"]


def test_a_written_folder_has_the_permissions_the_umask_gives_not_a_temporary_folders(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = write_folder(tmp_path / "out", fill("x"))
    finally:
        os.umask(old)
    assert oct(out.stat().st_mode & 0o777) == oct(0o755) and oct((out / "value.txt").stat().st_mode & 0o777) == oct(0o644)


def test_a_place_nothing_can_be_written_in_is_named_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(NotOurs, match=f"{tmp_path / 'a-file'} is a file, so no folder can be made there"):
        check_writable(tmp_path / "a-file" / "out")
    with pytest.raises(PermissionError, match=r"/proc/workings-out: cannot write in /proc \("):
        check_writable("/proc/workings-out")  # a file system that refuses new files, even to root
