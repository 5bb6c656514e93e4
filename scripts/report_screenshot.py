"""The README's picture of a report: a results folder's index.html as headless chromium draws it.

    python scripts/report_screenshot.py results/quick docs/report.png     (make screenshot)

The PNG carries, in tEXt chunks, the sha256 of the leaderboard.csv the page was built beside and
of the page itself (its "Generated <time>" left out: a rebuild of the same store changes nothing
else), so that a picture of numbers or a page the folder no longer holds fails a test
(tests/test_committed_results.py) instead of heading the README for weeks, as one of 2026-11-23 did.
"""
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from bench.atomic import check_output_file, write_bytes_atomic
from bench.errors import BenchError

# the size the README's picture has always had: the claims and the first dozen leaderboard rows
WINDOW = "1600,1200"
KEY = "tempbench-leaderboard-sha256"
PAGE_KEY = "tempbench-page-sha256"
GENERATED = re.compile(rb"Generated\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC")
# no network, no first-run pages, no scrollbar drawn over the table
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def text_chunk(keyword: str, text: str) -> bytes:
    body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


def page_digest(html: bytes) -> str:
    """sha256 of a report page without the time it was generated, which every rebuild changes."""
    return hashlib.sha256(GENERATED.sub(b"Generated", html)).hexdigest()


def complete_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"


def with_text(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with a tEXt chunk before its IEND chunk (the last 12 bytes of a PNG)."""
    return png[:-12] + text_chunk(keyword, text) + png[-12:]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    raise BenchError("no chromium on PATH: apt-get install chromium (as .ci/run does), then run this again")


def main(argv) -> int:
    if len(argv) != 2:
        raise BenchError("usage: python scripts/report_screenshot.py RESULTS_DIR OUT.png (e.g. results/quick "
                         "docs/report.png)")
    folder, out = Path(argv[0]), Path(argv[1])
    for name in ("index.html", "leaderboard.csv"):
        if not (folder / name).is_file():
            raise BenchError(f"{folder} has no {name}: python -m bench.report --results {folder} builds it")
    check_output_file("OUT.png", out, "report.png")
    exe = browser()
    with tempfile.TemporaryDirectory(prefix="tempbench-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        try:
            run = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={WINDOW}",
                                  f"--screenshot={shot}", (folder / "index.html").resolve().as_uri()],
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            why = f"exit {run.returncode}: " + (run.stderr.strip().splitlines() or ["no message"])[-1]
        except subprocess.TimeoutExpired:
            why = "still drawing after 300 s"
        png = shot.read_bytes() if shot.is_file() else b""
        if not complete_png(png):
            print(f"error: chromium drew no screenshot ({why})", file=sys.stderr)
            return 1
    digest = hashlib.sha256((folder / "leaderboard.csv").read_bytes()).hexdigest()
    page = page_digest((folder / "index.html").read_bytes())
    write_bytes_atomic(out, with_text(with_text(png, KEY, digest), PAGE_KEY, page))
    print(f"{out}: {folder / 'index.html'} at {WINDOW.replace(',', 'x')}, leaderboard.csv sha256 {digest[:16]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
