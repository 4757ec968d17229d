"""The bottom layer: files written atomically, and size-capped disk caches.

Every module of ``helpers`` that writes a file other readers may see, or keeps a disk
cache, does it through this module; it imports nothing from ``helpers``.

Atomic writes
    :func:`atomic_write` writes to a temporary file in the destination's folder (so the
    rename stays on one file system) and renames it into place with :func:`os.replace`. A
    reader sees the old file or the new one, never half of one; a failed write removes its
    temporary file and leaves the old file as it was. :func:`atomic_write_text` and
    :func:`atomic_write_bytes` are its common cases; :func:`replace_folder` swaps a whole
    folder in.

One permission rule
    Every file and folder written here gets the permissions an ordinary ``open()`` or
    ``mkdir()`` would give under the process's umask (``0o666 & ~umask`` for files,
    ``0o777 & ~umask`` for folders), caches included. ``tempfile`` makes private (``0600``)
    files, which would make a shared results or cache folder unreadable to the rest of a
    group.

Size-capped disk caches
    :class:`DiskCache` is a folder of entries, one file per key. Reading an entry marks it
    used (its modification time); writing one brings the folder back under its cap in bytes
    (and, if given, in entries) by deleting the least recently used entries first, never
    the one just written. An entry that cannot be read back (missing, damaged, another
    format) is a miss: the caller computes it again and writes it over. A cache that cannot
    be written costs time, not correctness: it warns and goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: What reading a damaged or half-known entry raises; any of them makes the read a miss.
UNREADABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
)

_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_BYTES_PATTERN = re.compile(r"^\s*(\d+)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)


def umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions of a new ordinary file: ``0o666`` less the umask."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """The permissions of a new ordinary folder: ``0o777`` less the umask."""
    return 0o777 & ~umask()


# --- Atomic writes ----------------------------------------------------------------------


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], Any], *, suffix: str = ".tmp"
) -> Path:
    """Write ``path`` through ``write(temporary_path)`` and a rename into place.

    Parameters
    ----------
    path : path-like
        The file to write; its folder is created.
    write : callable
        ``write(temporary_path)`` writes the whole content to ``temporary_path`` (a file in
        ``path``'s folder, already created, empty).
    suffix : str, default ".tmp"
        The temporary file's name ends with it (Keras insists on ``.weights.h5``, for one).

    Returns
    -------
    pathlib.Path
        ``path``, with permissions ``0o666 & ~umask``.

    Raises
    ------
    Exception
        Whatever ``write`` or the file system raises; the temporary file is removed and the
        old ``path`` (if any) is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp made it 0600: see the module's permission rule
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`), flushed to disk."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, newlines as given, atomically
    (see :func:`atomic_write`), flushed to disk.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "a.txt", "hello\\n").read_text()
    'hello\\n'
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def replace_folder(new: str | os.PathLike, destination: str | os.PathLike, *, old=None) -> None:
    """Put the folder ``new`` in the place of ``destination``: rename the old one away,
    rename the new one in, delete the old one.

    Parameters
    ----------
    new : path-like
        A complete folder on the same file system as ``destination``; it is given the
        permissions ``0o777 & ~umask`` (``tempfile.mkdtemp`` makes folders private).
    destination : path-like
        The folder to replace (it need not exist).
    old : path-like, optional
        Where the previous folder waits between the two renames (a reader that finds no
        ``destination`` may look there); default a hidden name beside it.

    Raises
    ------
    OSError
        If the new folder cannot be renamed in; the old one is then put back.
    """
    new, destination = Path(new), Path(destination)
    os.chmod(new, folder_mode())
    moved = None
    if destination.exists():
        moved = (
            Path(old)
            if old is not None
            else destination.with_name(f".{destination.name}.old.{uuid.uuid4().hex[:12]}")
        )
        os.rename(destination, moved)
    try:
        os.rename(new, destination)
    except OSError:
        if moved is not None:
            os.rename(moved, destination)
        raise
    if moved is not None:
        shutil.rmtree(moved, ignore_errors=True)


# --- Size-capped disk caches ------------------------------------------------------------


def parse_bytes(value: str, *, name: str) -> int:
    """A size in bytes from text: a whole number, optionally with a binary unit
    (``500000000``, ``512M``, ``8GiB``; K, M, G, T are powers of 1024, in any case).

    Raises
    ------
    ValueError
        If ``value`` is anything else, naming ``name`` and the value.

    Examples
    --------
    >>> parse_bytes("512M", name="CAP")
    536870912
    """
    match = _BYTES_PATTERN.match(value)
    if match is None:
        raise ValueError(
            f"{name} must be a whole number of bytes, optionally with a unit "
            f"K, M, G or T (powers of 1024), e.g. 4294967296 or 4GiB; got {value!r}"
        )
    number, unit = match.groups()
    return int(number) * _BYTE_UNITS[(unit or "").lower()]


def cache_bytes_from_environment(variable: str, default: int) -> int:
    """A cache's cap in bytes: the environment variable ``variable`` if set (the syntax of
    :func:`parse_bytes`), else ``default``.

    Raises
    ------
    ValueError
        If the variable is set to something that is not a size, naming it and the value.
    """
    value = os.environ.get(variable)
    return default if value is None else parse_bytes(value, name=variable)


def _check_cap(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0 or None, got {value!r}")
    return int(value)


class DiskCache:
    """A folder of cache entries, capped in bytes (and optionally in entries), the least
    recently used evicted first.

    Parameters
    ----------
    folder : path-like
        The cache's folder (created on the first write).
    pattern : str, default "*"
        Glob of the entries the cap counts and eviction may delete; other files of the
        folder, and hidden ones (temporary files of writers in progress), are left alone.
    max_bytes : int or None
        Cap on the entries' total size; ``0`` keeps only the entry just written; None: no cap.
    max_entries : int or None
        Cap on the number of entries; None: no cap.
    what : str
        The cache's name in warnings ("decoded-image cache").
    warning : type of Warning, default UserWarning
        The category of the warning given when an entry cannot be written.

    Raises
    ------
    ValueError
        If a cap is not a whole number >= 0 or None (naming the cap and the value).

    Examples
    --------
    >>> import tempfile
    >>> cache = DiskCache(tempfile.mkdtemp(), pattern="*.npy", max_bytes=10**6, what="demo")
    >>> cache.write_array("a.npy", np.arange(3)) is not None
    True
    >>> cache.read_array("a.npy", (3,), np.arange(3).dtype)
    array([0, 1, 2])
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        pattern: str = "*",
        max_bytes: int | None = None,
        max_entries: int | None = None,
        what: str = "disk cache",
        warning: type[Warning] = UserWarning,
    ):
        self.folder = Path(folder)
        self.pattern = pattern
        self.max_bytes = _check_cap(max_bytes, "max_bytes")
        self.max_entries = _check_cap(max_entries, "max_entries")
        self.what = what
        self.warning = warning

    def __repr__(self) -> str:
        return (
            f"DiskCache({str(self.folder)!r}, pattern={self.pattern!r}, "
            f"max_bytes={self.max_bytes}, max_entries={self.max_entries})"
        )

    def path(self, name: str) -> Path:
        """The file of the entry ``name``."""
        return self.folder / name

    def read(self, name: str, load: Callable[[Path], T | None]) -> T | None:
        """``load(path)`` of the entry ``name``, or None on a miss.

        A miss is a missing entry, or one ``load`` cannot read (it raises one of
        :data:`UNREADABLE_ERRORS` or returns None): damaged, half-known, or another
        format; the caller computes the value again and writes it over. A hit marks the
        entry as used now (:meth:`touch`: evicted last).
        """
        path = self.path(name)
        try:
            value = load(path)
        except UNREADABLE_ERRORS:
            return None
        if value is None:
            return None
        self.touch(name)
        return value

    def touch(self, name: str) -> None:
        """Mark the entry ``name`` as used now, for a capped cache (an uncapped one never
        evicts, and its files keep their times); a read-only cache is still worth reading."""
        if self.max_bytes is None and self.max_entries is None:
            return
        try:
            os.utime(self.path(name))
        except OSError:
            pass  # evicted by another process meanwhile, or read-only: the value is read

    def write(
        self,
        name: str,
        save: Callable[[Path], Any],
        *,
        suffix: str = ".tmp",
        must_succeed: bool = False,
    ) -> Path | None:
        """Write the entry ``name`` with ``save(temporary_path)`` (see :func:`atomic_write`),
        then bring the cache back under its caps (never evicting this entry).

        Returns
        -------
        pathlib.Path or None
            The entry's file; None when it could not be written (a warning says why),
            unless ``must_succeed``, which raises the OSError instead.
        """
        path = self.path(name)
        try:
            atomic_write(path, save, suffix=suffix)
            self.evict(keep=path)
        except OSError as error:
            if must_succeed:
                raise
            message = (
                f"could not write the {self.what} {path}: {error}; "
                "what it would hold is computed again when next needed"
            )
            warnings.warn(message, self.warning, stacklevel=3)
            return None
        return path

    def read_array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray | None:
        """The ``.npy`` entry ``name`` if it holds an array of ``shape`` and ``dtype``,
        else None (see :meth:`read`)."""

        def load(path: Path) -> np.ndarray | None:
            array = np.load(path, allow_pickle=False)
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                return None
            return array

        return self.read(name, load)

    def write_array(self, name: str, array: np.ndarray) -> Path | None:
        """Store ``array`` as the ``.npy`` entry ``name`` (see :meth:`write`)."""

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, array, allow_pickle=False)

        return self.write(name, save)

    def entries(self) -> list[Path]:
        """The entries (files matching ``pattern``, hidden ones left out), by name."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p for p in self.folder.glob(self.pattern) if not p.name.startswith(".") and p.is_file()
        )

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Delete the least recently used entries until the caps hold, never ``keep``.

        Returns
        -------
        list of pathlib.Path
            The deleted entries, least recently used first (ties broken by name).
        """
        if self.max_bytes is None and self.max_entries is None:
            return []
        entries = []
        for entry in self.entries():
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # deleted by another process since the listing
            entries.append((stat.st_mtime_ns, entry.name, stat.st_size, entry))
        total, count = sum(e[2] for e in entries), len(entries)
        removed = []
        for _, _, size, entry in sorted(entries):
            over_bytes = self.max_bytes is not None and total > self.max_bytes
            over_count = self.max_entries is not None and count > self.max_entries
            if not (over_bytes or over_count):
                break
            if keep is not None and entry == Path(keep):
                continue
            entry.unlink(missing_ok=True)
            total, count = total - size, count - 1
            removed.append(entry)
        return removed

    def clear(self) -> None:
        """Delete every entry."""
        for entry in self.entries():
            entry.unlink(missing_ok=True)
