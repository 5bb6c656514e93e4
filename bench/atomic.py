"""Files written atomically (a reader sees the old file or the whole new one, never a torn one),
and read back by content hash."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from bench.errors import BenchError


def sha256_files(paths: Iterable[Path]) -> str:
    """One sha256 over the files' bytes, in order (a checkpoint, or a zoo model's parts)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file in the target's folder, fsync, then rename over ``path``.

    The temp file lives in the same folder so the rename cannot cross file systems; a process
    killed mid-write leaves only a ``.tmp-*`` file that readers ignore. The file ends with the mode
    ``open`` gives a new file, 0666 less the umask, not the 0600 of ``tempfile.mkstemp`` (or of
    safetensors, which writes its own temp file and renames it over ours): the rename keeps the
    mode, and a store on a shared file system or a report served to colleagues must be readable
    by them.
    """
    path = Path(path)
    tmp_path = path.parent / f".tmp-{path.name}.{secrets.token_hex(8)}"
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileNotFoundError:
            # the folder went between the two calls: another process tidied it away while empty (a
            # training run that finished removes its checkpoints' in-progress/, drop_partial)
            if attempt == 2:
                raise
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            if os.fstat(f.fileno()).st_mode & 0o777 != mode:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:  # a write or close that failed names no file
            raise OSError(e.errno, e.strerror, str(tmp_path)) from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: where the folders for a new file would be
    made from, so where its writability is checked before anything is written."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def can_write_in(folder: Path) -> bool:
    """Whether new files can be made in the existing ``folder``. ``os.access`` alone is not enough:
    it answers yes to root everywhere, also in /proc or on a file system that refuses new files,
    so a folder is made there and removed again, and the folder's times are put back: a run
    refused after this check leaves everything as it found it."""
    folder = Path(folder)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return False
    st = os.stat(folder)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tempbench-probe-", dir=folder))
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def check_output_file(flag: str, path: Path, example: str) -> None:
    """Before the work that ends in writing ``path`` (a fit, a pass over a dataset): it must be a
    file, or a new one, in a writable folder or one that can be made. ``example``: a file name
    to suggest where ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{flag} {path} is a folder: give a file path, e.g. {path / example}")
    probe = existing_ancestor(path.parent)
    if not can_write_in(probe):
        raise BenchError(f"{flag} {path} cannot be written ({probe} is not a writable folder): give another path")


def user_path(text: str) -> str:
    """A path argument as the shell would have read it. bash expands ``~`` only at the start of a
    word, so ``--results=~/runs`` reaches argparse as it was typed, and taken as it is, it made a
    folder named ``~`` in the working directory (whose ``rm -rf ~`` deletes the home folder).

    An empty or blank one is refused (argparse's one-line error): ``--results ''`` read as "not
    given" wrote into results/<profile>, the committed results of the checkout, and ``--store ''``
    is Path(''), the working directory; ``--results ' '`` made a folder named by a space."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"empty path {text!r}: give a folder or file name, or leave the flag out")
    return os.path.expanduser(text)
