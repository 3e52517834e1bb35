"""Safe file writes and reads: every file normlab writes or reads back from an output folder
goes through here.

Writes are atomic: a reader (or a run resumed after ``kill -9``) sees either the old file or the
new one, never a half-written one. The bytes go to a new temporary file in the same folder
(``O_EXCL | O_NOFOLLOW``), are flushed to disk, and the temporary file is renamed over the
target with ``os.replace`` (atomic on POSIX), all relative to one open handle of the folder.

A write never goes anywhere but a regular file at the path it names (:func:`check_target`):

* a target that is a symbolic link is refused (a results folder unpacked from a tarball or on a
  shared disk can hold ``report.html -> ~/.bashrc``; ``os.replace`` would not write through it,
  but a user naming ``/proc/self/fd/1`` does not want it replaced either);
* a target that exists and is not a regular file (a device such as ``/dev/full``, a FIFO, a
  socket, a directory) is refused: ``os.replace`` would swap the device node for a file;
* a target that is one of the command's own inputs (``protect``) is refused;
* the folders normlab itself makes below an output folder (:func:`safe_dir`) are never links,
  so nothing is written outside the folder the user named.

Each refusal is a :class:`UnsafePath` (a ``ValueError``) naming the argument, what was expected
and what was found: the CLI prints it on one line and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(ValueError):
    """A path normlab refuses to write or read through (link, special file, its own input)."""


def kind(mode: int) -> str:
    """``a FIFO``, ``a directory``, ... for an ``lstat`` mode; ``a regular file`` otherwise."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file")


def check_target(path: str | os.PathLike, name: str = "path",
                 protect: Iterable[tuple[str | os.PathLike, str]] = ()) -> Path:
    """``path`` if a write may replace it: absent or a regular file, not a symbolic link, and
    none of ``protect`` ((path, what it is) pairs: the command's inputs). Raises
    :class:`UnsafePath` naming the argument ``name`` otherwise."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise UnsafePath(f"{name}: expected a file name, got {str(path)!r}")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:   # ENOTDIR, EACCES: the folder itself is the problem
        raise UnsafePath(f"{name}: expected a path in a folder normlab can write, got "
                         f"{str(path)!r} ({exc.strerror or exc})") from None
    # an input first, however it is reached (the same inode through a hard link, the same place
    # through a symbolic link, or not made yet): the more telling of the two refusals
    for other, what in protect:
        if _same_file(path, other) or os.path.realpath(path) == os.path.realpath(other):
            raise UnsafePath(f"{name}: expected a file other than {what} (normlab never "
                             f"overwrites its input), got {str(path)!r}")
    if mode is not None and stat.S_ISLNK(mode):
        raise UnsafePath(f"{name}: expected a path that is not a symbolic link (normlab never "
                         f"writes through a link), got {str(path)!r}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UnsafePath(f"{name}: expected a regular file or a new file name, got "
                         f"{str(path)!r}, which is {kind(mode)}")
    return path


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:   # b does not exist
        return False


def safe_dir(root: str | os.PathLike, *parts: str, name: str = "--out") -> Path:
    """``root/parts[0]/parts[1]/...``, each part made if missing and never a link.

    ``root`` is the folder the user named (made with its parents, links in it followed: the
    user chose it); every folder below it is one normlab makes, so a symbolic link (or a file)
    in its place is refused with :class:`UnsafePath` instead of followed out of ``root``.
    """
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if not part or part in (".", "..") or "/" in part or os.sep in part:
            raise ValueError(f"part: expected one folder name, got {part!r}")
        folder = folder / part
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        mode = os.lstat(folder).st_mode
        if not stat.S_ISDIR(mode):
            raise UnsafePath(f"{name}: expected {str(folder)!r} to be a folder normlab makes "
                             f"(it never follows a link out of the output folder), got "
                             f"{kind(mode)}")
    return folder


@contextmanager
def atomic_file(path: str | os.PathLike, name: str = "path",
                protect: Iterable[tuple[str | os.PathLike, str]] = ()) -> Iterator[BinaryIO]:
    """Yield a binary file; on success it replaces ``path``, on any error it is removed.
    ``path`` is checked first (:func:`check_target`), and again just before the replace."""
    path = check_target(path, name, protect)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    tmp = None
    try:
        while tmp is None:
            candidate = f".{path.name}.{secrets.token_hex(4)}.tmp"
            try:   # O_EXCL: never an existing file or link; 0o666 minus the umask, like open()
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                             | _CLOEXEC, 0o666, dir_fd=folder)
                tmp = candidate
            except FileExistsError:
                continue
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        check_target(path, name)   # the target may have been swapped while we wrote
        os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=folder)
            except FileNotFoundError:
                pass
        os.close(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, name: str = "path",
                       protect: Iterable[tuple[str | os.PathLike, str]] = ()) -> Path:
    with atomic_file(path, name, protect) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, name: str = "path",
                      protect: Iterable[tuple[str | os.PathLike, str]] = ()) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), name, protect)


def open_regular(path: str | os.PathLike, name: str = "path", flags: int = os.O_RDONLY,
                 create: bool = False) -> int:
    """A file descriptor of the regular file ``path``, opened without following a link
    (``O_NOFOLLOW``) and without blocking on a FIFO; ``create`` makes it if missing.
    Raises :class:`UnsafePath` for a link or a special file, ``FileNotFoundError`` if absent."""
    extra = (os.O_CREAT if create else 0) | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
    try:
        fd = os.open(path, flags | extra, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{name}: expected a regular file, got {str(path)!r}, which is "
                             f"a symbolic link (normlab never follows one out of a results "
                             f"folder)") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafePath(f"{name}: expected a regular file, got {str(path)!r}, which is "
                         f"{kind(mode)}")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: str | os.PathLike, name: str = "path") -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`)."""
    with os.fdopen(open_regular(path, name), "rb") as f:
        return f.read()


def is_regular(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file itself (a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
