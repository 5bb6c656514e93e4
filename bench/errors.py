"""The one exception type that the CLI turns into a one-line message and exit code 2, and the
file-system failures that stop a run midway, which it reports the same way."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Optional


class BenchError(Exception):
    """Bad input or a bad file: the user can fix it; the message says how."""


# A file system that stops a run midway (full, over quota, read-only, a file size limit): not bad
# input, which is checked before anything is written, nor a bug of the harness. Every write is
# atomic, so the store is whole and a rerun resumes once there is room.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def disk_stop(e: OSError) -> Optional[str]:
    """The one line for a run stopped by its file system, or None for any other OSError."""
    if e.errno not in DISK_ERRNOS:
        return None
    # the file is the temp file of an atomic write (.tmp-...): its folder is what the user can act on
    where = f" in {Path(e.filename).parent}" if e.filename else ""
    return (f"{e.strerror}{where}: what finished is kept (every write is atomic); make room and rerun the "
            f"same command to resume")


def stdout_closed() -> int:
    """The exit code for output whose reader left (``--list-models | head``): what it read is all it
    wanted, so no traceback. stdout goes to /dev/null first, or the interpreter's flush at exit
    raises the BrokenPipeError again (Python's documentation, "Note on SIGPIPE")."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
