"""Tests of helpers.files: atomic writes (old content kept on failure, no temporary left
behind, the umask's permissions) and the size-capped least-recently-used disk cache."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from helpers import files


def _age(path, seconds: int) -> None:
    """Make ``path`` look used ``seconds`` ago (file times are too coarse to order writes)."""
    stamp = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(stamp, stamp))


# --- Atomic writes ----------------------------------------------------------------------


def test_atomic_write_text_and_bytes_write_replace_and_leave_no_temporary(tmp_path):
    target = tmp_path / "deep" / "a.txt"
    assert files.atomic_write_text(target, "one\r\n") == target
    assert target.read_bytes() == b"one\r\n"  # newlines as given
    files.atomic_write_bytes(target, b"\x00two")
    assert target.read_bytes() == b"\x00two"
    assert os.listdir(target.parent) == ["a.txt"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    files.atomic_write_text(target, "old")

    def half_then_fail(tmp):
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(target, half_then_fail)
    with pytest.raises(TypeError, match="data must be bytes"):
        files.atomic_write_bytes(target, "text is not bytes")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        files.atomic_write(tmp_path / "new.bin", lambda tmp: 1 / 0)
    assert os.listdir(tmp_path) == []


def test_the_temporary_keeps_the_suffix_the_writer_needs(tmp_path):
    seen = []
    files.atomic_write(tmp_path / "w.weights.h5", lambda tmp: seen.append(tmp.name), suffix=".h5")
    assert seen[0].startswith(".w.weights.h5.") and seen[0].endswith(".h5")
    assert seen[0] != "w.weights.h5"


def test_files_and_folders_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        text = files.atomic_write_text(tmp_path / "a.txt", "x")
        cache = files.DiskCache(tmp_path / "cache", max_bytes=10**6)
        entry = cache.write_array("e.npy", np.zeros(3))
        new = tmp_path / "new"
        new.mkdir(mode=0o700)
        files.replace_folder(new, tmp_path / "folder")
    finally:
        os.umask(old)
    assert stat.S_IMODE(text.stat().st_mode) == 0o644
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644  # caches too: one rule
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_replace_folder_swaps_in_and_deletes_the_old_one(tmp_path):
    destination, new = tmp_path / "results", tmp_path / "staging"
    destination.mkdir()
    (destination / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    files.replace_folder(new, destination, old=tmp_path / ".results.old")
    assert (destination / "a").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["results"]


# --- The disk cache ---------------------------------------------------------------------


def test_the_cap_evicts_the_least_recently_used_entries_first(tmp_path):
    entry_bytes = files.DiskCache(tmp_path / "probe").write_array("x.npy", np.zeros(8)).stat()
    cache = files.DiskCache(tmp_path / "c", pattern="*.npy", max_bytes=2 * entry_bytes.st_size)
    a = cache.write_array("a.npy", np.zeros(8))
    _age(a, 300)
    b = cache.write_array("b.npy", np.ones(8))
    _age(b, 200)
    assert cache.read_array("a.npy", (8,), np.float64) is not None  # a is now the latest used
    c = cache.write_array("c.npy", np.full(8, 2.0))
    assert cache.entries() == [a, c]  # b, used longest ago, went


def test_an_entry_over_the_cap_is_kept_and_everything_else_goes(tmp_path):
    cache = files.DiskCache(tmp_path, pattern="*.npy", max_bytes=0)
    cache.write_array("a.npy", np.zeros(4))
    big = cache.write_array("b.npy", np.zeros(400))
    assert cache.entries() == [big]


def test_the_entry_cap_and_the_pattern_leave_other_files_alone(tmp_path):
    cache = files.DiskCache(tmp_path, pattern="phash-*.npz", max_entries=2)
    other = tmp_path / "notes.txt"
    other.write_text("not an entry")
    written = []
    for age, name in zip((300, 200, 100), ("phash-a.npz", "phash-b.npz", "phash-c.npz")):
        written.append(cache.write(name, lambda tmp: tmp.write_bytes(b"x")))
        _age(written[-1], age)
    assert cache.entries() == written[1:]
    assert other.read_text() == "not an entry"


def test_a_damaged_entry_is_a_miss_and_is_computed_again(tmp_path):
    cache = files.DiskCache(tmp_path, pattern="*.npy", max_bytes=10**6)
    entry = cache.write_array("a.npy", np.arange(5))
    entry.write_bytes(b"not an npy file")
    assert cache.read_array("a.npy", (5,), np.arange(5).dtype) is None
    cache.write_array("a.npy", np.arange(5))  # what the caller does on a miss
    assert cache.read_array("a.npy", (5,), np.arange(5).dtype).tolist() == [0, 1, 2, 3, 4]
    # Another shape or dtype than asked for is a miss too, never a wrong answer.
    assert cache.read_array("a.npy", (6,), np.arange(5).dtype) is None
    assert cache.read_array("missing.npy", (5,), np.int64) is None


def test_a_cache_that_cannot_be_written_warns_and_goes_on(tmp_path):
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("x")
    cache = files.DiskCache(blocker / "cache", what="demo cache", warning=RuntimeWarning)
    with pytest.warns(RuntimeWarning, match="could not write the demo cache .*a-file-not-a-folder"):
        assert cache.write_array("a.npy", np.zeros(2)) is None
    with pytest.raises(OSError):
        cache.write("a.npy", lambda tmp: None, must_succeed=True)


@pytest.mark.parametrize("bad", [-1, 1.5, "4G", True])
def test_a_bad_cap_is_named_in_the_error(tmp_path, bad):
    with pytest.raises(ValueError, match=f"max_bytes must be .* got {bad!r}"):
        files.DiskCache(tmp_path, max_bytes=bad)
    with pytest.raises(ValueError, match="max_entries must be"):
        files.DiskCache(tmp_path, max_entries=bad)


def test_a_bad_cap_setting_names_the_variable_and_the_value(monkeypatch):
    monkeypatch.setenv("SOME_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="SOME_CACHE_BYTES .* got 'lots'"):
        files.cache_bytes_from_environment("SOME_CACHE_BYTES", 10)
    monkeypatch.setenv("SOME_CACHE_BYTES", "2KiB")
    assert files.cache_bytes_from_environment("SOME_CACHE_BYTES", 10) == 2048
    monkeypatch.delenv("SOME_CACHE_BYTES")
    assert files.cache_bytes_from_environment("SOME_CACHE_BYTES", 10) == 10


def test_clear_deletes_the_entries_only(tmp_path):
    cache = files.DiskCache(tmp_path, pattern="*.npy")
    cache.write_array("a.npy", np.zeros(2))
    (tmp_path / "keep.txt").write_text("x")
    cache.clear()
    assert os.listdir(tmp_path) == ["keep.txt"]
