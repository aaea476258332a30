"""The test session's inductor cache: its own directory, and those left by dead sessions removed —
only those: not a running session's, not another user's, not a link, not another name."""

import os
import subprocess
import sys

import pytest

from tests import session_cache


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_caches_of_dead_sessions_are_removed_and_nothing_else(tmp_path):
    dead = tmp_path / f"{session_cache.PREFIX}{_dead_pid()}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "f").write_text("x")
    alive = tmp_path / f"{session_cache.PREFIX}{os.getpid()}-abc"
    alive.mkdir()
    unnamed = tmp_path / f"{session_cache.PREFIX}x7k2ab-c"  # no pid: the old naming, or someone else's
    unnamed.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"{session_cache.PREFIX}{_dead_pid()}-link"
    link.symlink_to(target, target_is_directory=True)
    assert session_cache.remove_stale(tmp_path) == [dead]
    assert not dead.exists()
    assert alive.is_dir() and unnamed.is_dir() and link.is_symlink() and target.is_dir()


def test_another_users_cache_is_kept(tmp_path, monkeypatch):
    dead = tmp_path / f"{session_cache.PREFIX}{_dead_pid()}-abc"
    dead.mkdir()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(dead).st_uid + 1)
    assert session_cache.remove_stale(tmp_path) == []
    assert dead.is_dir()


def test_this_session_has_its_own_cache_named_after_a_running_process():
    cache = os.path.basename(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    if not cache.startswith(session_cache.PREFIX):
        pytest.skip("TORCHINDUCTOR_CACHE_DIR was set outside the test session")
    pid = cache[len(session_cache.PREFIX) :].split("-", 1)[0]
    assert pid.isdigit() and session_cache._running(int(pid)), cache  # the session's first process
