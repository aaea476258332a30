"""The one atomic writer (alphakern.files): whole or nothing, a temporary file of its own per write,
nothing planted in the directory opened or written through."""

import errno
import os
import stat

import pytest

import alphakern.files as files
from alphakern.files import atomic_write


def _temps(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new" and _temps(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")

    def half(p):
        p.write_text("ha")
        raise KeyboardInterrupt  # an interruption mid-write, not only an error

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_two_writes_of_one_file_at_once_each_write_their_own_temporary_file(tmp_path):
    """A write that starts while another of the same file is in flight (as two processes saving one
    result): neither truncates nor renames the other's file; the last rename wins, whole."""
    target = tmp_path / "pareto.json"

    def outer(p):
        p.write_text("first, ")
        atomic_write(target, lambda q: q.write_text("second"))  # lands while the first is half written
        with p.open("a") as f:
            f.write("whole")

    atomic_write(target, outer)
    assert target.read_text() == "first, whole" and _temps(tmp_path) == []


def test_a_link_at_the_temporary_name_is_never_written_through(tmp_path, monkeypatch):
    victim = tmp_path / "someone_elses.txt"
    victim.write_text("theirs\n")
    (tmp_path / ".m.json.planted.tmp").symlink_to(victim)
    (tmp_path / ".m.json.dangling.tmp").symlink_to(tmp_path / "nowhere")  # O_CREAT would create it
    tokens = iter(["planted", "dangling", "fresh"])
    monkeypatch.setattr(files, "new_token", lambda: next(tokens))
    atomic_write(tmp_path / "m.json", lambda p: p.write_text("ours"))
    assert victim.read_text() == "theirs\n" and not (tmp_path / "nowhere").exists()
    assert (tmp_path / "m.json").read_text() == "ours" and not (tmp_path / "m.json").is_symlink()
    assert (tmp_path / ".m.json.planted.tmp").is_symlink()  # not ours: left as it was


def test_no_free_temporary_name_is_an_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / ".m.json.taken.tmp").write_text("")
    monkeypatch.setattr(files, "new_token", lambda: "taken")
    with pytest.raises(FileExistsError, match=r"beside .*m\.json"):
        atomic_write(tmp_path / "m.json", lambda p: p.write_text("x"))
    assert not (tmp_path / "m.json").exists()


def test_a_missing_directory_is_an_error_naming_it_and_the_file(tmp_path):
    missing = tmp_path / "runs" / "new"
    with pytest.raises(FileNotFoundError, match=rf"cannot write m.json: no such directory: '{missing}'") as e:
        atomic_write(missing / "m.json", lambda p: p.write_text("{}"))
    assert e.value.errno == errno.ENOENT and e.value.filename == str(missing)  # what callers may test
    assert not (tmp_path / "runs").exists()


def test_the_file_gets_the_mode_a_plain_write_would_give(tmp_path):
    """The umask decides, as for open(): not mkstemp's owner-only 0600 (a shared run directory's
    files stay readable to whom they were before)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write(tmp_path / "atomic.txt", lambda p: p.write_text("x"))
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_leftover_temps_are_a_killed_writes_files_of_that_target_only(tmp_path):
    target = tmp_path / "checkpoint.pt"
    killed = files._exclusive_temp(target)  # what a write killed before its rename leaves
    killed.write_bytes(b"half")
    other = files._exclusive_temp(tmp_path / "checkpoint.pt2")  # another file's
    victim = tmp_path / "someone_elses.txt"
    victim.write_text("theirs\n")
    (tmp_path / ".checkpoint.pt.0000aaaa.tmp").symlink_to(victim)  # a link is not ours
    (tmp_path / ".checkpoint.pt.tmp").write_text("")  # not a name the writer draws
    assert files.leftover_temps(target) == [killed] and other.exists()
    assert files.leftover_temps(target, older_than_s=3600) == []  # a write may still be in flight
