"""What every command line of the harness shares (bench.run, bench.report, bench.tools.*): a
usage error in one line, and one way to end on bad input, Ctrl-C, a reader that left or a file
system that refused a write. Here, importing argparse and bench.errors alone, so that a command
imports it without loading torch (``--help`` answers at once) and without an import cycle:
bench.run wires in bench.cli, which imports bench.report.publish, which is a command itself."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, Optional

from bench.errors import BenchError, disk_stop, stdout_closed


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own usage dump is a screenful)
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def in_the_way(e: OSError) -> Optional[str]:
    """The one line for a write that met a folder where it writes a file, or a file where it
    makes a folder (EISDIR, ENOTDIR), or None for any other OSError. The planners refuse the
    paths they know of before anything is written; this is for one made while the command ran."""
    if e.errno not in (errno.EISDIR, errno.ENOTDIR):
        return None
    # an atomic write's rename names its temp file first and the path in the way second
    where = e.filename2 or e.filename
    return (f"{e.strerror}: {where}: move what is in the way and rerun the same command (what finished is kept: "
            f"every write is atomic)")


def finish(body: Callable[[], int], interrupted: str,
           terminated: Callable[[KeyboardInterrupt], bool] = lambda e: False) -> int:
    """``body()``'s exit code, or the one line and exit code of how it stopped: a BenchError
    (bad input) 2; Ctrl-C 130 (143 where ``terminated`` says it was SIGTERM), with
    ``interrupted`` saying what is kept; a closed stdout 1; a full, read-only or blocked file
    system 2. Any other exception is a bug and keeps its traceback."""
    try:
        return body()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        term = terminated(e)
        print(f"{'terminated (SIGTERM)' if term else 'interrupted'}: {interrupted}", file=sys.stderr)
        return 143 if term else 130
    except BrokenPipeError:
        return stdout_closed()
    except OSError as e:
        message = disk_stop(e) or in_the_way(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2  # as a report that cannot be written, or a job that failed on Ray
